"""Pivotal tuning in a real AUTOMATIC1111 webui (skipped unless WEBUI_DIR is set; see test_webui_integration.py for
WEBUI_PYTHON): trained through the extension's API, the token's embedding file lands in the webui's embeddings
folder and is loaded at once, and `<lora:NAME:1>, zkw` renders differently from `<lora:NAME:1>` alone."""

from __future__ import annotations

import json

from test_webui_integration import pytestmark, wait_for_job, webui  # noqa: F401  (fixture, WEBUI_DIR skip)

NAME = "it-pivotal"


def test_pivotal_token_works_in_txt2img_right_after_training(webui, tmp_path):  # noqa: F811
    from lora_trainer.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", count=4)
    config = {"train_dir": str(data), "output_name": NAME, "resolution": 64, "enable_bucket": False,
              "network_dim": 8, "network_alpha": 8, "max_train_steps": 12, "unet_lr": 1e-2, "mixed_precision": "fp32",
              "train_text_encoder": False, "pivotal_tuning": True, "pivotal_token": "zkw", "pivotal_lr": 0.1,
              "sample_every_n_steps": 6, "sample_prompts": ["zkw --s 2"], "sample_weights": [1]}
    started = webui.client.post("/train-lora/v1/start", json={"config": config})
    assert started.status_code == 200, started.text + webui.log_tail()
    status = wait_for_job(webui)
    assert status["state"] == "completed", json.dumps(status, indent=1) + webui.log_tail()
    assert (webui.data / "embeddings" / "zkw.safetensors").is_file()  # the webui's embeddings folder
    loaded = webui.client.get("/sdapi/v1/embeddings").json()["loaded"]
    assert loaded["zkw"]["vectors"] == 2  # reloaded after training: txt2img knows the token now

    with_token, info = webui.txt2img(f"<lora:{NAME}:1>, zkw")
    alone, _ = webui.txt2img(f"<lora:{NAME}:1>")
    assert 'TI hashes: "zkw: ' in info["infotexts"][0]  # the webui substituted the token's vectors
    assert with_token != alone
