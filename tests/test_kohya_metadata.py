"""Issue 11 item 9: the metadata the ecosystem reads — the base checkpoint's name and hashes (from the host, file
name only), ss_clip_skip / ss_max_token_length / ss_network_args and modelspec 1.0.1 as kohya writes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.lora_file import load_lora
from lora_trainer.train import TrainHooks, train
from lora_trainer.ui.job import JobRunner
from lora_trainer.ui.webui import WebuiHost

sys.path.insert(0, str(Path(__file__).parent))
from ui_fakes import FakeHost, fake_sd1_model  # noqa: E402

IDENTITY = {"name": "anime-v3.safetensors", "hash": "1a2b3c4d", "sha256": "ab" * 32}


def test_trained_file_names_the_base_checkpoint_and_kohya_fields(tmp_path):
    config = make_config(tmp_path, "sd1", steps=1, conv_dim=4, conv_alpha=2, min_timestep=100, clip_skip=2)
    result = train(tiny_model("sd1"), config, hooks=TrainHooks(model_identity=IDENTITY))
    assert result.status == "completed", result.message
    meta = load_lora(result.final_file)[1]
    assert meta["ss_sd_model_name"] == "anime-v3.safetensors"
    assert meta["ss_sd_model_hash"] == "1a2b3c4d" and meta["ss_new_sd_model_hash"] == "ab" * 32
    assert meta["ss_clip_skip"] == "2" and meta["modelspec.encoder_layer"] == "2"
    assert meta["ss_max_token_length"] == str(getattr(config, "max_token_length", None))
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2", "dropout": None}
    assert meta["modelspec.sai_model_spec"] == "1.0.1" and meta["modelspec.timestep_range"] == "100,1000"
    assert meta["modelspec.implementation_version"].startswith("sd-webui-train-lora/")
    assert meta["ss_v_parameterization"] == "False" and meta["modelspec.prediction_type"] == "epsilon"


def test_without_a_host_nothing_about_the_checkpoint_is_invented(tmp_path):
    result = train(tiny_model("sdxl"), make_config(tmp_path, "sdxl", steps=1, clip_skip=2))
    meta = load_lora(result.final_file)[1]
    assert not {"ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash"} & set(meta)
    assert meta["ss_clip_skip"] == "None" and "modelspec.encoder_layer" not in meta  # SDXL: clip skip not applied
    assert "modelspec.timestep_range" not in meta and "ss_network_args" not in meta
    assert not any(str(tmp_path) in value for key, value in meta.items() if key != "ss_dataset_dirs")


class _Webui(WebuiHost):
    def __init__(self, info):
        self._model = SimpleNamespace(sd_checkpoint_info=info)

    def model(self):
        return self._model


def test_webui_host_reads_sd_checkpoint_info_without_folders_or_hashing():
    info = SimpleNamespace(filename="/home/me/webui/models/Stable-diffusion/anime/anime-v3.safetensors",
                           name="anime/anime-v3.safetensors", hash="1a2b3c4d", sha256=None)
    assert _Webui(info).checkpoint_identity() == {"name": "anime-v3.safetensors", "hash": "1a2b3c4d"}
    info.sha256 = "ab" * 32
    assert _Webui(info).checkpoint_identity()["sha256"] == "ab" * 32
    assert _Webui(None).checkpoint_identity() == {}


def test_the_job_hands_the_hosts_identity_to_the_engine(tmp_path):
    class Host(FakeHost):
        def checkpoint_identity(self):
            return dict(IDENTITY)

    seen = {}

    def fake_train(model, config, progress, cancel, hooks):
        from lora_trainer.train import TrainResult

        seen["identity"] = hooks.model_identity
        return TrainResult("error", "stop here")

    from ui_fakes import make_dataset

    from lora_trainer.config import TrainConfig

    host = Host(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    config = TrainConfig(train_dir=str(make_dataset(tmp_path / "data")), output_dir=str(tmp_path / "out"),
                         max_train_steps=1).validate()
    job = JobRunner(host, train_fn=fake_train).start(config)
    assert job.done.wait(30)
    assert seen["identity"] == IDENTITY


SAI_SCRIPT = """
import json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable
ensure_torchvision_importable()
sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # library.utils imports it; build_metadata never uses it
from library import sai_model_spec
v2, v, sdxl = (a == "1" for a in sys.argv[3:6])
print(json.dumps(sai_model_spec.build_metadata(None, v2, v, sdxl, True, False, 1700000000.0, title="cat",
                                               reso=(512, 768), timesteps=(100, 1000), clip_skip=2)))
"""


@pytest.mark.parametrize("arch,flags,prediction", [("sd1", "000", "epsilon"), ("sd2", "100", "epsilon"),
                                                   ("sd2v", "110", "v"), ("sdxl", "001", "epsilon"),
                                                   ("sdxl", "011", "v")])
def test_modelspec_matches_sd_scripts(arch, flags, prediction, tmp_path):
    """With SD_SCRIPTS_DIR (a kohya sd-scripts checkout): our modelspec.* equals sd-scripts' own build_metadata."""
    import os
    import subprocess

    from lora_trainer.lora_file import build_metadata

    scripts = os.environ.get("SD_SCRIPTS_DIR", "")
    if not scripts or not (Path(scripts) / "library" / "sai_model_spec.py").is_file():
        pytest.skip("set SD_SCRIPTS_DIR to a kohya sd-scripts checkout")
    script = tmp_path / "sai.py"
    script.write_text(SAI_SCRIPT, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), scripts, str(Path(__file__).resolve().parents[1]), *flags],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    ours = build_metadata(arch, output_name="cat", rank=4, alpha=4, resolution=(512, 768), now=1700000000.0,
                          clip_skip=2, timestep_range=(100, 1000), prediction_type=prediction)
    ours = {k: v for k, v in ours.items() if k.startswith("modelspec.")}
    assert ours.pop("modelspec.implementation_version").startswith("sd-webui-train-lora/")
    assert theirs.pop("modelspec.implementation_version").startswith("sd-scripts/")
    assert ours == theirs


def test_clip_skip_zero_outside_the_webui_is_written_as_the_layer_used(tmp_path):
    """clip_skip 0 means "the webui's setting"; without a webui (nothing resolved it) SD1 is encoded at 1, and the
    file says 1, never 0 (kohya and loaders read ss_clip_skip / modelspec.encoder_layer as the layer)."""
    config = make_config(tmp_path, "sd1", steps=1)
    assert config.clip_skip == 0
    meta = load_lora(train(tiny_model("sd1"), config).final_file)[1]
    assert meta["ss_clip_skip"] == "1" and meta["modelspec.encoder_layer"] == "1"
