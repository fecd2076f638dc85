"""UI values -> TrainConfig mapping and the validation messages the tab shows (no gradio, no webui)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.ui import form

ROOT = Path(__file__).resolve().parents[1]


def values(**overrides):
    v = form.default_values(output_dir="/loras")
    v.update(train_dir="/data/train")
    v.update(overrides)
    return v


def test_every_config_field_has_exactly_one_form_field():
    config_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    form_keys = [f.key for f in form.FIELDS]
    assert len(form_keys) == len(set(form_keys))
    assert sorted(k for k in form_keys if k not in form.UI_ONLY_DEFAULTS) == sorted(config_fields)


def test_labels_are_unique_because_the_webui_saves_values_by_label():
    labels = [f.label for f in form.FIELDS]
    assert len(labels) == len(set(labels))


def test_default_form_values_give_the_default_config():
    config = form.values_to_config(values(), default_output_dir="/loras")
    expected = TrainConfig(train_dir="/data/train", output_dir="/loras").validate()
    assert config.to_dict() == expected.to_dict()


def test_gradio_number_floats_become_ints_and_text_is_stripped():
    config = form.values_to_config(values(network_dim=32.0, train_batch_size=2.0, output_name="  hero  ",
                                          train_dir=" /data/train "))
    assert config.network_dim == 32 and isinstance(config.network_dim, int)
    assert config.train_batch_size == 2
    assert config.output_name == "hero" and config.train_dir == "/data/train"


def test_schedule_by_epochs_ignores_the_steps_field():
    config = form.values_to_config(values(schedule_by="Epochs", max_train_epochs=3, max_train_steps=500))
    assert (config.max_train_epochs, config.max_train_steps) == (3, 0)


def test_schedule_by_steps_uses_steps_and_requires_them():
    config = form.values_to_config(values(schedule_by="Steps", max_train_steps=250))
    assert config.max_train_steps == 250
    with pytest.raises(ConfigError) as err:
        form.values_to_config(values(schedule_by="Steps", max_train_steps=0))
    assert err.value.field == "max_train_steps"


def test_preview_prompts_weights_and_optimizer_args_are_parsed():
    config = form.values_to_config(values(
        sample_prompts="a hero, red cape\n\n  a hero --n blurry  \n", sample_weights="0, 0.5 1",
        optimizer_args="weight_decay=0.01 betas=0.9,0.99 decouple=True"))
    assert config.sample_prompts == ["a hero, red cape", "a hero --n blurry"]
    assert config.sample_weights == [0.0, 0.5, 1.0]
    assert config.optimizer_args == {"weight_decay": 0.01, "betas": [0.9, 0.99], "decouple": True}
    config = form.values_to_config(values(optimizer_args='{"eps": 1e-8}'))
    assert config.optimizer_args == {"eps": 1e-8}


def test_empty_output_folder_means_the_default_one():
    assert form.values_to_config(values(output_dir=""), default_output_dir="/webui/models/Lora").output_dir \
        == "/webui/models/Lora"
    assert form.values_to_config(values(output_dir="/mine"), default_output_dir="/x").output_dir == "/mine"


def test_config_to_values_round_trips():
    config = TrainConfig(train_dir="/d", output_dir="/o", sample_prompts=["a", "b --n c"], sample_weights=[0, 0.8],
                         optimizer_args={"weight_decay": 0.1}, max_train_steps=77).validate()
    back = form.values_to_config(form.config_to_values(config))
    assert back.to_dict() == config.to_dict()


@pytest.mark.parametrize("overrides, field, words", [
    ({"output_name": "../evil"}, "output_name", "not a file name"),
    ({"output_name": "sub/dir"}, "output_name", "not a file name"),
    ({"output_name": "a..b"}, "output_name", "not a file name"),
    ({"output_name": ""}, "output_name", "not a file name"),
    ({"train_dir": ""}, "train_dir", "choose the folder"),
    ({"network_dim": 0}, "network_dim", "must be > 0"),
    ({"network_alpha": 0}, "network_alpha", "must be > 0"),
    ({"resolution": 500}, "resolution", "multiple of 64"),
    ({"network_dropout": 1.5}, "network_dropout", "[0, 1)"),
    ({"optimizer": "Adam9000"}, "optimizer", "not one of"),
    ({"unet_lr": None}, "unet_lr", "enter a value"),
    ({"network_dim": 2.5}, "network_dim", "expected int"),
    ({"sample_weights": "zero, one"}, "sample_weights", "numbers separated by commas"),
    ({"optimizer_args": "{not json"}, "optimizer_args", "invalid JSON"),
    ({"optimizer_args": "weight_decay"}, "optimizer_args", "key=value"),
    ({"max_train_epochs": 0}, "max_train_epochs", "set epochs"),
])
def test_bad_values_name_the_field_with_a_message(overrides, field, words):
    with pytest.raises(ConfigError) as err:
        form.values_to_config(values(**overrides))
    assert err.value.field == field
    message = form.describe_error(err.value)
    assert message.startswith(form.field_label(field) + ": ")
    assert words in message


def test_describe_error_uses_the_tab_label():
    assert form.describe_error(ConfigError("network_dim", "must be > 0, got 0")) == "Rank (dim): must be > 0, got 0"
    assert form.describe_error(ConfigError("whatever", "x")) == "whatever: x"


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError):
        form.values_to_config(values(not_an_option=1))


def test_options_doc_documents_every_field_and_its_default():
    text = (ROOT / "docs" / "OPTIONS.md").read_text(encoding="utf-8")
    defaults = form.default_values()
    for field in form.FIELDS:
        assert f"| {field.label} |" in text, field.label
        row = next(line for line in text.splitlines() if line.startswith(f"| {field.label} |"))
        assert f"`{field.key}`" in row, field.key
        shown = defaults[field.key]
        if shown not in ("", None) and not isinstance(shown, bool):
            assert str(shown).splitlines()[0] in row, (field.key, shown)
