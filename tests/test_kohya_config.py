"""Issue 11 items 8 and 10: kohya's bucket_reso_steps rule per architecture, and importing an sd-scripts / kohya_ss
config (TOML or JSON) with every unused option reported by name — from the CLI and the tab."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.__main__ import main
from lora_trainer.config import ConfigError
from lora_trainer.kohya_config import import_kohya, load_kohya_config, parse_text
from lora_trainer.kohya_semantics import for_arch
from lora_trainer.train import train

sys.path.insert(0, str(Path(__file__).parent))

KOHYA_TOML = """
pretrained_model_name_or_path = "/models/sd_xl_base_1.0.safetensors"
train_data_dir = "{data}"
output_dir = "{out}"
output_name = "hero"
resolution = "512,512"
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
network_args = ["conv_dim=8", "conv_alpha=4", "algo=locon"]
network_train_unet_only = true
learning_rate = 0.0002
text_encoder_lr = [5e-5, 5e-5]
optimizer_type = "adamw8bit"
optimizer_args = ["weight_decay=0.01", "betas=0.9,0.99"]
lr_scheduler = "cosine"
lr_warmup_steps = 0.1
max_train_steps = 2000
max_train_epochs = 12
mixed_precision = "bf16"
save_precision = "float"
xformers = true
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"
min_snr_gamma = 5
seed = 7
color_aug = false
face_crop_aug_range = ""

[extra]
noise_offset = 0.05
multires_noise_iterations = 6
"""


def test_sd_scripts_toml_maps_onto_train_config_and_reports_what_it_ignores(tmp_path):
    path = tmp_path / "config_lora.toml"
    path.write_text(KOHYA_TOML.format(data=tmp_path / "img", out=tmp_path / "out"), encoding="utf-8")
    imported = load_kohya_config(path)
    c = imported.config
    assert (c.train_dir, c.output_name, c.resolution) == (str(tmp_path / "img"), "hero", 512)
    assert (c.network_dim, c.network_alpha, c.conv_dim, c.conv_alpha) == (32, 16.0, 8, 4.0)
    assert c.train_unet and not c.train_text_encoder
    assert (c.unet_lr, c.text_encoder_lr) == (2e-4, 5e-5)  # learning_rate is the UNet's when unet_lr is unset
    assert c.optimizer == "AdamW8bit" and c.optimizer_args == {"weight_decay": 0.01, "betas": [0.9, 0.99]}
    assert (c.lr_scheduler, c.lr_warmup_steps) == ("cosine", 0.1)
    assert (c.max_train_epochs, c.max_train_steps) == (12, 0)  # kohya: epochs override steps
    assert (c.mixed_precision, c.save_precision) == ("bf16", "fp32")
    assert c.shuffle_caption and c.keep_tokens == 1 and c.min_snr_gamma == 5 and c.seed == 7
    assert c.noise_offset == 0.05  # [tables] are flattened like sd-scripts' read_config_from_file
    ignored = dict(imported.ignored)
    assert set(ignored) == {"pretrained_model_name_or_path", "xformers", "network_args",
                            "multires_noise_iterations"}
    assert "algo=locon" in ignored["network_args"] and "loaded in the webui" in ignored[
        "pretrained_model_name_or_path"]
    assert set(imported.ignored_off) == {"color_aug", "face_crop_aug_range"}
    report = imported.report()
    for name in list(ignored) + imported.ignored_off:
        assert name in report
    assert "overrides max_train_steps" in report


def test_steps_precedence_and_defaults_as_kohya():
    assert import_kohya({"max_train_steps": 500}).config.max_train_steps == 500
    only_defaults = import_kohya({"network_dim": 4})
    assert only_defaults.config.max_train_steps == 1600 and "1600" in only_defaults.report()
    gui = import_kohya({"epoch": 3, "lr_warmup": 10, "optimizer": "Prodigy", "LoRA_type": "Standard"})
    assert (gui.config.max_train_epochs, gui.config.max_train_steps, gui.config.lr_warmup_steps) == (3, 0, 0.1)
    assert gui.config.optimizer == "Prodigy" and dict(gui.ignored) == {"LoRA_type": "not supported here"}
    # kohya_ss GUI JSON writes unset numbers as "" or 0
    gui = import_kohya({"epoch": 2, "max_train_epochs": "", "max_train_steps": "0", "max_resolution": "768,768",
                        "seed": "", "learning_rate": "0.0003"})
    assert (gui.config.max_train_epochs, gui.config.max_train_steps, gui.config.resolution) == (2, 0, 768)
    assert gui.config.unet_lr == 3e-4 and gui.config.seed == 42 and not gui.notes
    with pytest.raises(ConfigError) as err:
        import_kohya({"network_dim": "many"})
    assert err.value.field == "network_dim" and "kohya config" in str(err.value)
    with pytest.raises(ValueError, match="square"):
        import_kohya({"resolution": "768,512"})
    assert import_kohya({"network_module": "lycoris.kohya"}).ignored[0][0] == "network_module"
    prompts = import_kohya({"max_token_length": 150, "weighted_captions": True})
    assert (prompts.config.max_token_length, prompts.config.weighted_captions, prompts.ignored) == (150, True, [])


def test_cli_trains_from_a_kohya_config(tmp_path, capsys):
    config = make_config(tmp_path, "sd1", steps=1)
    kohya = {"train_data_dir": config.train_dir, "output_dir": str(tmp_path / "out"), "output_name": "k",
             "resolution": 64, "enable_bucket": False, "network_dim": 4, "max_train_steps": 1,
             "mixed_precision": "no", "save_precision": "float", "cache_latents": True, "xformers": True}
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps(kohya), encoding="utf-8")
    assert main(["train", "--kohya-config", str(path), "--model", "sd1"]) == 0
    out = capsys.readouterr().out
    assert "xformers" in out and "completed" in out and (tmp_path / "out" / "k.safetensors").is_file()


def test_the_tab_loads_a_pasted_kohya_config(tmp_path):
    pytest.importorskip("gradio")
    from test_ui_tab import FakeTrain
    from ui_fakes import FakeHost, fake_sd1_model

    from lora_trainer.ui import form
    from lora_trainer.ui.handlers import Handlers
    from lora_trainer.ui.job import JobRunner

    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    handlers = Handlers(JobRunner(host, train_fn=FakeTrain(host)))
    message, *values = handlers.load_kohya('network_dim = 24\nmax_train_epochs = 4\nsdpa = true\n')
    by_key = dict(zip([f.key for f in form.FIELDS], values))
    assert by_key["network_dim"] == 24 and by_key["max_train_epochs"] == 4 and by_key["schedule_by"] == "Epochs"
    assert "Loaded the kohya config" in message and "sdpa" in message
    assert "not a kohya config" in handlers.load_kohya("[[[")[0]
    assert parse_text('{"a": 1}') == {"a": 1}


# ---- item 8: bucket_reso_steps per architecture ------------------------------------------------------------------
@pytest.mark.parametrize("arch,step,ok", [("sd1", 32, False), ("sd1", 128, True), ("sd2", 96, False),
                                          ("sdxl", 32, True), ("sdxl", 48, False)])
def test_bucket_reso_steps_follows_kohya_per_architecture(arch, step, ok):
    from lora_trainer.config import TrainConfig

    config = TrainConfig(train_dir="x", bucket_reso_steps=step)
    if ok:
        assert for_arch(config, arch).bucket_reso_steps == step
        return
    with pytest.raises(ConfigError) as err:
        for_arch(config, arch)
    assert err.value.field == "bucket_reso_steps" and ("64" if arch != "sdxl" else "32") in str(err.value)


def test_training_refuses_a_bad_bucket_step_naming_the_field(tmp_path):
    result = train(tiny_model("sd1"), make_config(tmp_path, "sd1", steps=1, bucket_reso_steps=32))
    assert result.status == "error" and result.message.startswith("bucket_reso_steps")
    assert "multiple of 64" in result.message


def test_every_mapped_name_is_an_sd_scripts_option():
    """With SD_SCRIPTS_DIR: each sd-scripts name the importer maps is an argument sd-scripts really defines."""
    import os

    from lora_trainer import kohya_config

    scripts = os.environ.get("SD_SCRIPTS_DIR", "")
    if not scripts or not (Path(scripts) / "train_network.py").is_file():
        pytest.skip("set SD_SCRIPTS_DIR to a kohya sd-scripts checkout")
    sources = [Path(scripts) / "train_network.py", *(Path(scripts) / "library").glob("*.py")]
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sources)
    gui_only = {"epoch", "conv_dim", "conv_alpha", "sdxl", "max_resolution"}  # kohya_ss GUI JSON names
    names = (set(kohya_config.SAME) | set(kohya_config.RENAMED) | set(kohya_config.COVERED) | {
        "max_train_steps", "max_train_epochs", "learning_rate", "network_args", "optimizer_type", "optimizer_args",
        "mixed_precision", "save_precision", "network_train_unet_only", "network_train_text_encoder_only",
        "sample_prompts", "network_module"}) - gui_only
    missing = sorted(n for n in names if f'"--{n}"' not in text)
    assert missing == []


def test_toml_without_a_toml_reader_is_a_message_not_a_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # Python 3.10 without tomli (the webui's venv)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ValueError, match="tomli"):
        parse_text("network_dim = 4")
    assert parse_text('{"network_dim": 4}') == {"network_dim": 4}  # JSON still works


def test_the_tab_refuses_a_bad_bucket_step_before_the_job_starts(tmp_path):
    from test_ui_job import FakeTrain
    from ui_fakes import FakeHost, fake_sd1_model, make_dataset

    from lora_trainer.config import TrainConfig
    from lora_trainer.ui import form
    from lora_trainer.ui.job import JobRunner

    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    fake = FakeTrain(host)
    config = TrainConfig(train_dir=str(make_dataset(tmp_path / "data")), output_dir=str(tmp_path / "out"),
                         max_train_steps=1, bucket_reso_steps=32).validate()
    with pytest.raises(ConfigError) as err:
        JobRunner(host, train_fn=fake).start(config)
    assert err.value.field == "bucket_reso_steps" and not fake.started.is_set()
    assert form.describe_error(err.value).startswith("Bucket step: must be a multiple of 64 for SD1")
