"""The mapping between the tab's field values (fields.py) and a TrainConfig: defaults, display values,
parsing what the form sends, recipes, error messages. Pure Python: no gradio, no webui.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any, Dict, List, Optional

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.ui.fields import (  # noqa: F401 - the field list lives in fields.py; importers use form
    FIELDS,
    FIELDS_BY_KEY,
    SCHEDULE_CHOICES,
    SECTIONS,
    UI_ONLY_DEFAULTS,
    Field,
)


def field_label(key: str) -> str:
    return FIELDS_BY_KEY[key].label if key in FIELDS_BY_KEY else key


# ---- defaults -------------------------------------------------------------------------------------------------
def default_values(output_dir: str = "", caption_extension: str = ".txt") -> Dict[str, Any]:
    """Initial UI values; the webui settings supply the output folder and caption extension."""
    base = TrainConfig(output_dir=output_dir, caption_extension=caption_extension or ".txt")
    return config_to_values(base)


def config_to_values(config: TrainConfig) -> Dict[str, Any]:
    """A config as the tab shows it (lists and dicts become text)."""
    data = config.to_dict()
    values: Dict[str, Any] = dict(UI_ONLY_DEFAULTS)
    for f in FIELDS:
        if f.key in data:
            values[f.key] = _to_display(f.key, data[f.key])
    values["schedule_by"] = "Steps" if config.max_train_steps > 0 else "Epochs"
    return values


def _to_display(key: str, value: Any) -> Any:
    if key == "sample_prompts":
        return "\n".join(value)
    if key == "sample_weights":
        return ", ".join(f"{float(w):g}" for w in value)
    if key == "optimizer_args":
        return json.dumps(value) if value else ""
    return value


# ---- UI values -> config --------------------------------------------------------------------------------------
def values_to_config(values: Dict[str, Any], default_output_dir: str = "") -> TrainConfig:
    """Build and validate a TrainConfig from tab values. Raises ConfigError (field = a TrainConfig/UI key)."""
    data: Dict[str, Any] = {}
    config_fields = {f.name for f in fields(TrainConfig)}
    for key, value in values.items():
        if key not in FIELDS_BY_KEY:
            raise ConfigError(key, "unknown field")
        if value is None:
            raise ConfigError(key, "enter a value")
        if isinstance(value, str) and FIELDS_BY_KEY[key].kind in ("text", "textarea"):
            value = value.strip()
        if key in config_fields:
            data[key] = value
    if "sample_weights" in data:
        data["sample_weights"] = parse_weights(data["sample_weights"])
    if "optimizer_args" in data:
        data["optimizer_args"] = parse_optimizer_args(data["optimizer_args"])
    schedule = values.get("schedule_by", UI_ONLY_DEFAULTS["schedule_by"])
    if schedule not in SCHEDULE_CHOICES:
        raise ConfigError("schedule_by", f"choose {' or '.join(SCHEDULE_CHOICES)}")
    if schedule == "Epochs":
        data["max_train_steps"] = 0  # TrainConfig: steps > 0 would override the epochs
    elif float(data.get("max_train_steps") or 0) <= 0:
        raise ConfigError("max_train_steps", "set the number of steps (or train for Epochs)")
    if not data.get("output_dir"):
        data["output_dir"] = default_output_dir
    return TrainConfig.from_dict(data).validate()


def parse_weights(text: Any) -> List[float]:
    if isinstance(text, (list, tuple)):
        return [float(v) for v in text]
    parts = [p for p in re.split(r"[,\s]+", str(text)) if p]
    try:
        return [float(p) for p in parts]
    except ValueError as exc:
        raise ConfigError("sample_weights", f"{text!r}: write numbers separated by commas, e.g. 0, 0.5, 1") from exc


def parse_optimizer_args(text: Any) -> Dict[str, Any]:
    """JSON object, or kohya's `key=value key=value` (values parsed as JSON when they can be: 0.01, true, 0.9,0.99)."""
    if isinstance(text, dict):
        return dict(text)
    text = str(text).strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ConfigError("optimizer_args", f"invalid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError("optimizer_args", "JSON must be an object")
        return parsed
    out: Dict[str, Any] = {}
    for item in text.split():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("optimizer_args", f"{item!r} is not key=value")
        out[key] = _parse_scalar_or_tuple(raw)
    return out


def _parse_scalar_or_tuple(raw: str) -> Any:
    if "," in raw:
        return [_parse_scalar_or_tuple(p) for p in raw.split(",") if p]
    try:
        return json.loads(raw.lower() if raw.lower() in ("true", "false") else raw)
    except ValueError:
        return raw


# ---- recipes ----------------------------------------------------------------------------------------------------
def apply_recipe_to_values(values: Dict[str, Any], name: str, loaded_arch: str = "") -> tuple:
    """(new tab values, markdown note) with the recipe's settings filled in; other fields keep their values."""
    from lora_trainer.recipes import get_recipe

    recipe = get_recipe(name)
    out = dict(values)
    for key, value in recipe.settings.items():
        if key not in FIELDS_BY_KEY:
            raise ConfigError(key, f"recipe {recipe.name!r} sets an option the tab does not have")
        out[key] = _to_display(key, value)
    return out, recipe.describe(loaded_arch)


# ---- messages ---------------------------------------------------------------------------------------------------
def describe_error(error: ConfigError) -> str:
    """'Rank (dim): must be > 0, got 0' — the tab's label instead of the config field name."""
    message = str(error)
    prefix = f"{error.field}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    return f"{field_label(error.field)}: {message}"


def find_field(key: str) -> Optional[Field]:
    return FIELDS_BY_KEY.get(key)
