"""End to end against a real AUTOMATIC1111 webui (v1.10.x) checkout: skipped unless WEBUI_DIR is set.

Starts the webui on the CPU with a tiny SD1 checkpoint built here and this repository installed as an extension,
trains through the HTTP API, finds the file in the Lora folder, and generates with `<lora:NAME:1>`.

    WEBUI_DIR=/path/to/stable-diffusion-webui [WEBUI_PYTHON=/path/to/its/python] pytest tests/test_webui_integration.py

WEBUI_PYTHON defaults to WEBUI_DIR/venv/bin/python, else this interpreter. The webui must be installed already
(it is started with --skip-prepare-environment) and must not need the internet.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

WEBUI_DIR = os.environ.get("WEBUI_DIR", "")
pytestmark = pytest.mark.skipif(not WEBUI_DIR, reason="set WEBUI_DIR to a webui v1.10.x checkout to run this")

REPO = Path(__file__).resolve().parents[1]
AUTH = ("tester", "secret")
LORA_NAME = "it-lora"
STARTUP_TIMEOUT = 300


def webui_python() -> str:
    if os.environ.get("WEBUI_PYTHON"):
        return os.environ["WEBUI_PYTHON"]
    venv = Path(WEBUI_DIR) / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def write_tiny_checkpoint(path: Path) -> None:
    """A tiny SD1 checkpoint plus the `name.yaml` the webui loads it with."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from lora_trainer.testing import build_tiny_model
    from lora_trainer.testing.tiny_sd import tiny_sd_config

    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model("sd1", seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    OmegaConf.save(OmegaConf.create(tiny_sd_config(v2=False, v_prediction=False)), str(path.with_suffix(".yaml")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webui:
    def __init__(self, base: str, data: Path, process: subprocess.Popen, log: Path):
        import httpx

        self.base, self.data, self.process, self.log = base, data, process, log
        self.client = httpx.Client(base_url=base, auth=AUTH, timeout=120)

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def txt2img(self, prompt: str, seed: int = 1):
        response = self.client.post("/sdapi/v1/txt2img", json={
            "prompt": prompt, "seed": seed, "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler",
            "cfg_scale": 5})
        assert response.status_code == 200, response.text + self.log_tail()
        body = response.json()
        return base64.b64decode(body["images"][0]), json.loads(body["info"])


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    import httpx

    data = tmp_path_factory.mktemp("webui-data")
    write_tiny_checkpoint(data / "ckpt" / "tiny-sd1.safetensors")
    (data / "extensions").mkdir()
    (data / "extensions" / "sd-webui-train-lora").symlink_to(REPO, target_is_directory=True)
    port = free_port()
    log = data / "webui.log"
    args = [webui_python(), "launch.py", "--skip-prepare-environment", "--skip-torch-cuda-test",
            "--skip-version-check", "--use-cpu", "all", "--no-half", "--no-half-vae", "--precision", "full",
            "--api", "--api-auth", ":".join(AUTH), "--no-download-sd-model", "--server-name", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data), "--ckpt-dir", str(data / "ckpt")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COMMANDLINE_ARGS="")
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=WEBUI_DIR, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Webui(f"http://127.0.0.1:{port}", data, process, log)
    try:
        deadline = time.time() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the webui exited with {process.returncode}:\n{server.log_tail()}")
            try:
                # our routes come last (on_app_started runs after the webui's own API is up)
                if server.client.get("/train-lora/v1/status", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the webui did not answer within {STARTUP_TIMEOUT}s:\n{server.log_tail()}")
            time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        if os.environ.get("WEBUI_KEEP_LOG"):
            shutil.copy(log, os.environ["WEBUI_KEEP_LOG"])


def wait_for_job(webui, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = webui.client.get("/train-lora/v1/status", params={"log_lines": 200}).json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.5)
    pytest.fail(f"training did not finish in {timeout}s:\n{webui.log_tail()}")


def test_train_through_the_api_and_use_the_lora_in_txt2img(webui, tmp_path):
    import httpx

    from lora_trainer.demo import make_demo_dataset

    # the extension's routes honour --api-auth like the webui's own
    assert httpx.get(f"{webui.base}/train-lora/v1/status").status_code == 401
    # the settings section is registered
    options = webui.client.get("/sdapi/v1/options").json()
    assert options["train_lora_caption_extension"] == ".txt" and "train_lora_output_dir" in options
    # the tab is part of the UI
    config = webui.client.get("/config").json()
    assert any(c.get("props", {}).get("elem_id") == "train_lora_start" for c in config["components"])

    base_image, base_info = webui.txt2img("demo, red circle")  # also makes sure the checkpoint is loaded
    data = make_demo_dataset(tmp_path / "data", count=4)
    train_config = {
        "train_dir": str(data), "output_name": LORA_NAME, "resolution": 64, "enable_bucket": False,
        "network_dim": 8, "network_alpha": 8, "max_train_steps": 24, "unet_lr": 1e-2, "text_encoder_lr": 1e-3,
        "mixed_precision": "fp32", "gradient_checkpointing": True, "sample_every_n_steps": 12,
        "sample_prompts": ["demo, red circle --s 2"], "sample_weights": [0, 1], "trigger_word": "demo",
    }
    started = webui.client.post("/train-lora/v1/start", json={"config": train_config})
    assert started.status_code == 200, started.text + webui.log_tail()
    assert started.json()["arch"] == "sd1"
    # a txt2img request sent now waits for the training: the job holds the webui's queue_lock
    blocked = {}
    waiter = threading.Thread(target=lambda: blocked.update(image=webui.txt2img("demo"), at=time.time()))
    waiter.start()
    second = webui.client.post("/train-lora/v1/start", json={"config": dict(train_config, output_name="other")})
    if webui.client.get("/train-lora/v1/status").json()["state"] in ("queued", "running"):
        assert second.status_code == 409 and "already running" in second.json()["detail"]["message"]

    status = wait_for_job(webui)
    assert status["state"] == "completed", json.dumps(status, indent=1) + webui.log_tail()
    waiter.join(120)
    assert blocked["at"] >= status["finished_at"] - 1.0  # (clock rounding) it only ran after the training
    print(f"\ntrained {status['step']} steps in {status['finished_at'] - status['started_at']:.1f} s; a txt2img "
          f"sent at the start returned {blocked['at'] - status['finished_at']:.1f} s after the job finished")
    lora_file = webui.data / "models" / "Lora" / f"{LORA_NAME}.safetensors"
    assert status["final_file"] == str(lora_file) and lora_file.is_file()
    assert len(status["previews"]) == 2 and all(Path(p).is_file() for p in status["previews"])
    assert lora_file.with_suffix(".preview.png").is_file()

    # the webui lists it (the job refreshed the Lora list; the explicit refresh is what a client would do)
    assert webui.client.post("/sdapi/v1/refresh-loras").status_code == 200
    names = [entry["name"] for entry in webui.client.get("/sdapi/v1/loras").json()]
    assert LORA_NAME in names

    lora_image, lora_info = webui.txt2img(f"demo, red circle <lora:{LORA_NAME}:1>")
    assert f"{LORA_NAME}:" in lora_info["infotexts"][0]  # "Lora hashes: it-lora: ..." : the LoRA was applied
    assert lora_image != base_image
    again_image, _ = webui.txt2img("demo, red circle")
    assert again_image == base_image  # the model is left exactly as it was before training

    from PIL import Image

    assert Image.open(io.BytesIO(lora_image)).size == (64, 64)


def test_cancel_bad_input_and_progress_bar_release(webui, tmp_path):
    from lora_trainer.demo import make_demo_dataset

    bad = webui.client.post("/train-lora/v1/start", json={"config": {"train_dir": "x", "output_name": "a/../b"}})
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "output_name"
    missing = webui.client.post("/train-lora/v1/start", json={"config": {"train_dir": str(tmp_path / "none")}})
    assert missing.status_code == 400 and "does not exist" in missing.json()["detail"]["message"]

    data = make_demo_dataset(tmp_path / "data", count=2)
    started = webui.client.post("/train-lora/v1/start", json={"config": {
        "train_dir": str(data), "output_name": "it-cancel", "resolution": 64, "enable_bucket": False,
        "network_dim": 4, "network_alpha": 4, "max_train_steps": 2000, "mixed_precision": "fp32",
        "gradient_checkpointing": False}})
    assert started.status_code == 200, started.text
    task_id = started.json()["task_id"]
    deadline = time.time() + 120
    while webui.client.get("/train-lora/v1/status").json()["step"] < 2:
        assert time.time() < deadline, webui.log_tail()
        time.sleep(0.3)
    progress = webui.client.post("/internal/progress", json={"id_task": task_id, "live_preview": False}).json()
    assert progress["active"] and 0 < progress["progress"] < 1 and "step" in progress["textinfo"]
    assert webui.client.post("/train-lora/v1/cancel").json()["cancelled"] is True
    status = wait_for_job(webui, timeout=120)
    assert status["state"] == "cancelled" and "Cancelled at step" in status["message"]
    assert Path(status["final_file"]).is_file()  # what was trained so far is kept
    progress = webui.client.post("/internal/progress", json={"id_task": task_id, "live_preview": False}).json()
    assert progress["completed"] and not progress["active"]  # the webui's progress bar is released
    image, _ = webui.txt2img("after cancel")  # and the GPU lock: generation works again
    assert image
