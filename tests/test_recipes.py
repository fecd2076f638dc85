"""Recipes are data: each one loads, fills the tab's form and validates as a TrainConfig; the API and the CLI
accept a recipe name, and explicit options win over it."""

from __future__ import annotations

import json

import pytest

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.pivotal.options import config_warnings
from lora_trainer.recipes import RECIPES_FILE, apply_recipe, get_recipe, load_recipes, recipe_names
from lora_trainer.ui import form
from lora_trainer.ui.api import config_from_json

REQUIRED = ("kohya classic", "SDXL Prodigy", "SDXL pivotal", "Style (SD1.5)", "Character (SD1.5)")


def test_the_required_recipes_exist_with_reasons():
    names = recipe_names()
    assert all(name in names for name in REQUIRED), names
    for recipe in load_recipes():
        assert recipe.summary and recipe.why, recipe.name
        assert set(recipe.why) <= set(recipe.settings), (recipe.name, set(recipe.why) - set(recipe.settings))


@pytest.mark.parametrize("name", REQUIRED)
def test_each_recipe_is_a_valid_config(name, tmp_path):
    recipe = get_recipe(name)
    config = TrainConfig.from_dict({**recipe.settings, "train_dir": str(tmp_path), "output_dir": str(tmp_path)})
    config.validate()
    for key, value in recipe.settings.items():
        assert getattr(config, key) == value or (isinstance(value, list) and list(getattr(config, key)) == value)
    if config.optimizer == "Prodigy":
        assert config_warnings(config) == []  # the recipe's lrs are what Prodigy wants


@pytest.mark.parametrize("name", REQUIRED)
def test_each_recipe_fills_the_form_and_the_form_gives_the_recipe(name, tmp_path):
    values = form.default_values(output_dir=str(tmp_path))
    values["train_dir"] = str(tmp_path)
    filled, note = form.apply_recipe_to_values(values, name, "sdxl")
    config = form.values_to_config(filled)
    for key, value in get_recipe(name).settings.items():
        got = getattr(config, key)
        assert got == value or (isinstance(value, list) and list(got) == value), key
        assert f"`{key}`" in note
    assert name in note
    assert ("Made for SD1.5" in note) == name.endswith("(SD1.5)")


def test_the_hf_recipe_values():
    prodigy, pivotal = get_recipe("SDXL Prodigy").settings, get_recipe("SDXL pivotal").settings
    for s in (prodigy, pivotal):
        assert s["optimizer"] == "Prodigy" and s["unet_lr"] == 1.0 and s["text_encoder_lr"] == 1.0
        assert s["prodigy_safeguard_warmup"] and s["prodigy_use_bias_correction"] and s["prodigy_decouple"]
        assert (s["prodigy_weight_decay"], s["prodigy_te_weight_decay"]) == (1e-4, 1e-3)
        assert s["min_snr_gamma"] == 5 and s["lr_scheduler"] == "constant"
    assert pivotal["pivotal_tuning"] and pivotal["pivotal_frac"] == 0.5 and pivotal["pivotal_vectors_per_token"] == 2
    classic = get_recipe("kohya classic").settings
    assert (classic["optimizer"], classic["lr_scheduler"], classic["unet_lr"], classic["text_encoder_lr"],
            classic["network_dim"], classic["network_alpha"]) == ("AdamW8bit", "constant", 1e-4, 5e-5, 16, 8)


def test_explicit_options_win_over_the_recipe_in_the_api(tmp_path):
    config = config_from_json({"train_dir": str(tmp_path), "network_dim": 4}, str(tmp_path), "SDXL pivotal")
    assert config.network_dim == 4 and config.optimizer == "Prodigy" and config.pivotal_tuning
    assert config.trigger_word == "zkw"  # the token becomes the trigger word
    with pytest.raises(ConfigError) as err:
        config_from_json({"train_dir": str(tmp_path)}, str(tmp_path), "no such recipe")
    assert err.value.field == "recipe" and "kohya classic" in str(err.value)


def test_api_start_accepts_a_recipe(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lora_trainer.ui.api import register_routes
    from lora_trainer.ui.host import Host
    from lora_trainer.ui.job import JobRunner

    app = FastAPI()
    register_routes(app, JobRunner(Host()))
    response = TestClient(app).post("/train-lora/v1/start", json={"config": {"train_dir": str(tmp_path)},
                                                                  "recipe": "nope"})
    assert response.status_code == 422 and response.json()["detail"]["field"] == "recipe"


def test_cli_recipe_under_the_config_file(tmp_path, monkeypatch):
    import argparse

    import lora_trainer.train as train_pkg
    from lora_trainer.cli import train_cmd

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train_dir": str(tmp_path / "missing"), "network_dim": 4}), encoding="utf-8")
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--recipe", "Style (SD1.5)", "--output-dir", str(tmp_path)])
    captured = {}

    def fake_train(model, config, **kwargs):  # the config the CLI built is what this test checks
        captured["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(train_pkg, "train", fake_train)
    with pytest.raises(SystemExit):
        train_cmd.run(args)
    config = captured["config"]
    assert config.network_dim == 4 and config.network_alpha == 16 and config.lr_scheduler == "cosine"


def test_recipes_file_is_plain_json_data():
    data = json.loads(RECIPES_FILE.read_text(encoding="utf-8"))
    assert [r["name"] for r in data["recipes"]] == recipe_names()
    assert apply_recipe({"unet_lr": 3e-4}, "kohya classic")["unet_lr"] == 3e-4
