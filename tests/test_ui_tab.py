"""The gradio 3.41 tab builds without a webui, and its handlers answer bad input with messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from lora_trainer.ui import form, panels  # noqa: E402
from lora_trainer.ui.handlers import Handlers  # noqa: E402
from lora_trainer.ui.job import JobRunner  # noqa: E402
from lora_trainer.ui.tab import build_tab  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_job import FakeTrain  # noqa: E402
from ui_fakes import FakeHost, fake_sd1_model, make_dataset  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    fake = FakeTrain(host)
    runner = JobRunner(host, train_fn=fake)
    return host, runner, Handlers(runner), tmp_path


def args_for(**overrides):
    values = form.default_values()
    values["train_dir"] = "/some/dir"  # config validation comes before the folder checks
    values.update(overrides)
    return [values[f.key] for f in form.FIELDS]


def test_the_tab_builds_with_every_field(setup):
    host, runner, handlers, tmp_path = setup
    blocks = build_tab(runner)
    assert isinstance(blocks, gr.Blocks)
    config = blocks.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    for field in form.FIELDS:
        assert f"train_lora_{field.key}" in ids
    for elem_id in ("train_lora_start", "train_lora_cancel", "train_lora_progress", "train_lora_loss_plot",
                    "train_lora_previews", "train_lora_log", "train_lora_send_to_txt2img", "train_lora_refresh",
                    "train_lora_model_info", "train_lora_check_dataset", "train_lora_caption_button"):
        assert elem_id in ids, elem_id
    placeholders = [c["props"].get("placeholder") for c in config["components"]
                    if c.get("props", {}).get("elem_id") == "train_lora_output_dir"]
    assert placeholders == [str(tmp_path / "Lora")]


@pytest.mark.parametrize("overrides, words", [
    ({"train_dir": ""}, "Training images folder: choose the folder"),
    ({"output_name": "a/b"}, "LoRA name:"),
    ({"output_name": ".."}, "LoRA name:"),
    ({"network_dim": 0}, "Rank (dim): must be > 0"),
    ({"train_dir": "/no/such/dir"}, "does not exist"),
])
def test_start_with_bad_input_shows_a_message_and_no_task(setup, overrides, words):
    host, runner, handlers, tmp_path = setup
    message, _key, _status, task_id, model_info = handlers.start(*args_for(**overrides))
    assert words in message and "train-lora-error" in message
    assert task_id == gr.update()  # the progress bar is not attached
    assert runner.job is None


def test_start_without_a_model_and_while_running(setup):
    host, runner, handlers, tmp_path = setup
    data = str(make_dataset(tmp_path / "data"))
    host._model = None
    assert "No checkpoint is loaded" in handlers.start(*args_for(train_dir=data))[0]
    assert "No checkpoint is loaded" in handlers.model_info()
    host._model = fake_sd1_model()
    assert "SD1" in handlers.model_info()
    runner._train_fn.gate.clear()
    notice, _key, status, task_id, _ = handlers.start(*args_for(train_dir=data))
    assert task_id.startswith("task(") and "my_lora" in status and notice == ""
    assert "already running" in handlers.start(*args_for(train_dir=data, output_name="other"))[0]
    assert "Cancelling" in handlers.cancel()[0]
    assert runner.job.done.wait(10)
    assert handlers.cancel()[0] == "No training job is running."


def test_refresh_shows_status_plot_log_and_send_snippet(setup):
    host, runner, handlers, tmp_path = setup
    data = str(make_dataset(tmp_path / "data"))
    handlers.start(*args_for(train_dir=data, trigger_word="zzhero", output_name="hero"))
    assert runner.job.done.wait(10)
    status, frame, previews, log, send, task_id, _notice, _key = handlers.refresh()
    assert "Finished" in status and "hero.safetensors" in status
    assert list(frame.columns) == ["step", "loss", "curve"] and len(frame) == 6
    assert "saved" in log
    assert send == "<lora:hero:0.8>, zzhero"
    assert task_id == ""  # nothing running: the page does not attach a progress bar


def test_check_dataset_and_captioning(setup):
    host, runner, handlers, tmp_path = setup
    data = make_dataset(tmp_path / "data")
    summary, table = handlers.check_dataset(*args_for(train_dir=str(data), resolution=64))
    assert "Ready to train" in summary and table["value"][0][:2] == ["5_thing", 5]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "is empty" in handlers.check_dataset(*args_for(train_dir=str(empty)))[0]
    (data / "5_thing" / "00.txt").unlink()
    result = handlers.caption(str(data), "zz", ".txt", True, False, "skip")
    assert "1 written" in result and "1 kept" in result
    assert (data / "5_thing" / "00.txt").read_text().strip() == "zz, a photo of a thing"
    assert ("captioners_unloaded",) in host.calls
    assert "Tick BLIP" in handlers.caption(str(data), "", ".txt", False, False, "skip")
    assert "does not exist" in handlers.caption(str(tmp_path / "nope"), "", ".txt", True, False, "skip")


def test_settings_json_round_trip(setup):
    host, runner, handlers, tmp_path = setup
    text, note = handlers.settings_json(*args_for(train_dir="/d", network_dim=12))
    assert json.loads(text)["network_dim"] == 12 and "/train-lora/v1/start" in note
    message, *values = handlers.load_json(text)
    assert message == "Loaded." and values[[f.key for f in form.FIELDS].index("network_dim")] == 12
    assert "invalid JSON" in handlers.load_json("{oops")[0]
    assert "unknown option" in handlers.load_json('{"bogus": 1}')[0]


def test_folder_choices(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    choices = panels.folder_choices(str(tmp_path / "missing" / "deeper"))
    assert choices[0] == str(tmp_path) and str(tmp_path / "a") in choices
    assert str(tmp_path / ".hidden") not in choices


def test_status_markdown_and_eta():
    assert panels.format_eta(3725) == "1:02:05" and panels.format_eta(65) == "1:05" and panels.format_eta(None) == "-"
    text = panels.status_markdown({"state": "running", "output_name": "x", "message": "Step 2/10", "step": 2,
                                   "total_steps": 10, "epoch": 1, "total_epochs": 2, "avg_loss": 0.12345,
                                   "lr": 1e-4, "it_per_s": 1.5, "eta_s": 90})
    assert "step 2/10" in text and "loss 0.1235" in text and "ETA 1:30" in text
    assert panels.send_to_txt2img_text({"files": ["/l/x-000002.safetensors"]}, 1.0) == "<lora:x-000002:1>"
