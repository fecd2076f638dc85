"""The HTTP API on a bare FastAPI app: request/response models, one job at a time, --api-auth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lora_trainer.ui.api import (
    PREFIX,
    StartRequest,
    StatusResponse,
    config_from_json,
    parse_api_auth,
    register_routes,
    status_response,
)
from lora_trainer.ui.job import JobRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_job import FakeTrain  # noqa: E402
from ui_fakes import FakeHost, fake_sd1_model, make_dataset  # noqa: E402


def make_app(tmp_path, credentials=None):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"), credentials=credentials)
    fake = FakeTrain(host)
    runner = JobRunner(host, train_fn=fake)
    app = FastAPI()
    register_routes(app, runner)
    return TestClient(app), runner, fake


def config_json(tmp_path, **kw):
    data = dict(train_dir=str(make_dataset(tmp_path / "data")), output_name="api-hero", max_train_steps=3)
    data.update(kw)
    return {"config": data}


def test_start_status_and_files(tmp_path):
    client, runner, fake = make_app(tmp_path)
    assert client.get(f"{PREFIX}/status").json()["state"] == "idle"
    response = client.post(f"{PREFIX}/start", json=config_json(tmp_path))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] in ("queued", "running", "completed") and body["arch"] == "sd1"
    assert body["output_file"] == str(tmp_path / "Lora" / "api-hero.safetensors")
    assert runner.job.done.wait(10)
    status = client.get(f"{PREFIX}/status", params={"log_lines": 2}).json()
    assert status["state"] == "completed" and status["job_id"] == body["job_id"]
    assert status["step"] == 3 and status["total_steps"] == 3 and status["loss"] == pytest.approx(1 / 3)
    assert status["files"] == [str(tmp_path / "Lora" / "api-hero.safetensors")]
    assert len(status["log"]) == 2
    assert "loss_history" not in status  # the status stays small; the tab has the plot


def test_second_job_is_refused_with_409_and_cancel_stops_the_first(tmp_path):
    client, runner, fake = make_app(tmp_path)
    fake.gate.clear()
    assert client.post(f"{PREFIX}/start", json=config_json(tmp_path)).status_code == 200
    assert fake.started.wait(10)
    second = client.post(f"{PREFIX}/start", json=config_json(tmp_path, output_name="two"))
    assert second.status_code == 409
    assert "already running" in second.json()["detail"]["message"]
    cancel = client.post(f"{PREFIX}/cancel").json()
    assert cancel["cancelled"] is True
    assert runner.job.done.wait(10)
    assert client.get(f"{PREFIX}/status").json()["state"] == "cancelled"
    assert client.post(f"{PREFIX}/cancel").json() == {"cancelled": False, "message": "No training job is running."}


@pytest.mark.parametrize("overrides, code, field", [
    ({"output_name": "../x"}, 422, "output_name"),
    ({"network_dim": "many"}, 422, "network_dim"),
    ({"no_such_option": 1}, 422, "no_such_option"),
    ({"train_dir": "/no/such/folder"}, 400, "train_dir"),
])
def test_bad_configs_get_a_field_and_a_message(tmp_path, overrides, code, field):
    client, runner, fake = make_app(tmp_path)
    response = client.post(f"{PREFIX}/start", json=config_json(tmp_path, **overrides))
    assert response.status_code == code
    assert response.json()["detail"]["field"] == field and response.json()["detail"]["message"]


def test_missing_config_is_a_validation_error(tmp_path):
    client, runner, fake = make_app(tmp_path)
    assert client.post(f"{PREFIX}/start", json={}).status_code == 422


def test_no_model_is_refused_with_409(tmp_path):
    client, runner, fake = make_app(tmp_path)
    runner.host._model = None
    response = client.post(f"{PREFIX}/start", json=config_json(tmp_path))
    assert response.status_code == 409 and "No checkpoint" in response.json()["detail"]["message"]


def test_api_auth_is_enforced_like_the_webui(tmp_path):
    client, runner, fake = make_app(tmp_path, credentials=parse_api_auth("alice:secret,bob:pw:with:colons"))
    assert client.get(f"{PREFIX}/status").status_code == 401
    denied = client.get(f"{PREFIX}/status", auth=("alice", "wrong"))
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Basic"
    assert client.get(f"{PREFIX}/status", auth=("alice", "secret")).status_code == 200
    assert client.get(f"{PREFIX}/status", auth=("bob", "pw:with:colons")).status_code == 200
    assert client.post(f"{PREFIX}/cancel").status_code == 401
    assert client.post(f"{PREFIX}/start", json=config_json(tmp_path)).status_code == 401


def test_check_dataset_route_returns_the_report(tmp_path):
    client, runner, fake = make_app(tmp_path)
    report = client.post(f"{PREFIX}/check-dataset", json=config_json(tmp_path, resolution=64)).json()
    assert report["ok"] is True and report["folders"][0]["name"] == "5_thing"
    assert report["folders"][0]["images"] == 2 and report["num_train_images"] == 10


def test_parse_api_auth():
    assert parse_api_auth(None) is None and parse_api_auth("") is None
    assert parse_api_auth("a:b, c:d") == {"a": "b", "c": "d"}


def test_models_without_a_webui():
    assert StartRequest(config={"train_dir": "/x"}).config == {"train_dir": "/x"}
    status = status_response({"state": "running", "step": 5, "log": ["a", "b", "c"], "extra": 1}, log_lines=2)
    assert isinstance(status, StatusResponse) and status.log == ["b", "c"] and status.step == 5
    assert set(StatusResponse.schema()["properties"]) >= {"state", "step", "total_steps", "loss", "eta_s", "files"}
    config = config_from_json({"train_dir": "/x", "network_dim": "8"}, "/default")
    assert config.output_dir == "/default" and config.network_dim == 8
