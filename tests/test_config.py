"""TrainConfig: defaults validate, files round-trip, bad values name the field."""

from __future__ import annotations

import pytest

from lora_trainer.config import ConfigError, TrainConfig


def test_defaults_validate_and_round_trip_toml_and_json(tmp_path):
    cfg = TrainConfig(train_dir="data", sample_prompts=["a cat", "a dog"], optimizer_args={"weight_decay": 0.01})
    cfg.validate()
    for name in ("c.toml", "c.json"):
        cfg.save(tmp_path / name)
        assert TrainConfig.load(tmp_path / name) == cfg


@pytest.mark.parametrize("changes,field", [
    ({"train_dir": ""}, "train_dir"),
    ({"output_name": "../evil"}, "output_name"),
    ({"output_name": "a/b"}, "output_name"),
    ({"network_dim": 0}, "network_dim"),
    ({"network_alpha": 0}, "network_alpha"),
    ({"resolution": 500}, "resolution"),
    ({"optimizer": "Adam9000"}, "optimizer"),
    ({"lr_scheduler": "weird"}, "lr_scheduler"),
    ({"network_dropout": 1.5}, "network_dropout"),
    ({"max_train_epochs": 0, "max_train_steps": 0}, "max_train_epochs"),
    ({"train_unet": False, "train_text_encoder": False}, "train_unet"),
    ({"cache_text_encoder_outputs": True, "sdxl_unet_only": False}, "cache_text_encoder_outputs"),
    ({"v_pred_like_loss": -0.1}, "v_pred_like_loss"),
])
def test_invalid_values_name_the_field(changes, field):
    cfg = TrainConfig(train_dir="data", **{k: v for k, v in changes.items() if k != "train_dir"})
    if "train_dir" in changes:
        cfg.train_dir = changes["train_dir"]
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_from_dict_coerces_form_values_and_rejects_unknown_keys():
    cfg = TrainConfig.from_dict({"train_dir": "d", "network_dim": "32", "flip_aug": "true",
                                 "unet_lr": "2e-4", "sample_prompts": "a cat\n\na dog"})
    assert cfg.network_dim == 32 and cfg.flip_aug is True and cfg.unet_lr == 2e-4
    assert cfg.sample_prompts == ["a cat", "a dog"]
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"netwrok_dim": 4})
    assert err.value.field == "netwrok_dim"
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"network_dim": "sixteen"})
    assert err.value.field == "network_dim"


def test_warmup_fraction():
    assert TrainConfig(lr_warmup_steps=0.1).warmup_steps(95) == 9  # kohya: int(0.1 * 95), rounded down
    assert TrainConfig(lr_warmup_steps=0.05).warmup_steps(10) == 0
    assert TrainConfig.from_dict({"lr_warmup_steps": 0.1}).lr_warmup_steps == 0.1  # a fraction from the form/JSON
    assert TrainConfig(lr_warmup_steps=7).warmup_steps(95) == 7
