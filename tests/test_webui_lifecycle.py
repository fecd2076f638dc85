"""Issue 12 against a real AUTOMATIC1111 webui (skipped unless WEBUI_DIR is set, see test_webui_integration.py):
Settings → Reload UI does not stop a training, the webui's Interrupt does (and keeps the file), and Ctrl+C saves
the partial LoRA before the process ends."""

from __future__ import annotations

import signal
import time

import pytest
from test_webui_integration import WEBUI_DIR, wait_for_job, webui  # noqa: F401 - the module-scoped fixture

from lora_trainer.lora_file import load_lora

pytestmark = pytest.mark.skipif(not WEBUI_DIR, reason="set WEBUI_DIR to a webui v1.10.x checkout to run this")


def start_long_job(webui, data, name):  # noqa: F811
    response = webui.client.post("/train-lora/v1/start", json={"config": {
        "train_dir": str(data), "output_name": name, "resolution": 64, "enable_bucket": False, "network_dim": 4,
        "network_alpha": 4, "max_train_steps": 100000, "mixed_precision": "fp32", "cache_latents": False,
        "gradient_checkpointing": False, "overwrite": True}})
    assert response.status_code == 200, response.text
    deadline = time.time() + 300
    while time.time() < deadline:
        status = webui.client.get("/train-lora/v1/status").json()
        if status["state"] == "running" and status["step"] >= 2:
            return status
        assert status["state"] in ("queued", "running"), status
        time.sleep(0.5)
    pytest.fail(webui.log_tail())


def press_reload_ui(webui):  # noqa: F811
    """The Settings page's Reload UI button, through gradio (its click calls shared.state.request_restart)."""
    config = webui.client.get("/config").json()
    button = next(c["id"] for c in config["components"]
                  if c.get("props", {}).get("elem_id") == "settings_restart_gradio")
    index = next(i for i, d in enumerate(config["dependencies"])
                 if d.get("trigger") == "click" and button in [t if isinstance(t, int) else t[0] for t in d["targets"]])
    response = webui.client.post("/run/predict", json={"fn_index": index, "data": [], "session_hash": "issue12"})
    assert response.status_code == 200, response.text


def test_reload_ui_keeps_training_interrupt_stops_it_and_ctrl_c_saves(webui, tmp_path):  # noqa: F811
    from lora_trainer.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", count=2)
    before = start_long_job(webui, data, "it-reload")
    press_reload_ui(webui)
    deadline = time.time() + 180
    while "Startup time" not in webui.log_tail(200).split("Restarting UI...")[-1] and time.time() < deadline:
        time.sleep(1)
    assert "Restarting UI..." in webui.log_tail(400)
    time.sleep(3)
    status = webui.client.get("/train-lora/v1/status").json()
    assert status["state"] == "running" and status["job_id"] == before["job_id"], status

    assert webui.client.post("/sdapi/v1/interrupt").status_code == 200
    status = wait_for_job(webui)
    assert status["state"] == "cancelled" and "Interrupted from the webui" in status["message"], status
    assert int(load_lora(status["final_file"])[1]["ss_steps"]) >= 2

    start_long_job(webui, data, "it-ctrl-c")
    webui.process.send_signal(signal.SIGINT)
    webui.process.wait(60)
    log = webui.log_tail(400)
    assert "saving 'it-ctrl-c' first" in log and "Interrupted with signal 2" in log, log
    lora_dir = webui.data / "models" / "Lora"
    assert int(load_lora(lora_dir / "it-ctrl-c.safetensors")[1]["ss_steps"]) >= 2
    assert list(lora_dir.glob("*.tmp")) == []
