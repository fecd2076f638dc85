"""Import a kohya config: sd-scripts' `--config_file` TOML (what kohya_ss writes as config_lora-*.toml) or the same
option names as JSON, mapped onto TrainConfig, with every option that is not used reported by name.

Names and semantics follow sd-scripts (library/train_util.py, train_network.py): tables are flattened one level as
`read_config_from_file` does; `max_train_epochs` overrides `max_train_steps`, and with neither the run is
sd-scripts' default 1600 steps; `learning_rate` is the UNet and text-encoder rate unless those are given;
`network_args` ("conv_dim=4") carries the LoCon ranks; `network_train_unet_only` / `_text_encoder_only` pick the parts.
A few kohya_ss GUI JSON names (`epoch`, `optimizer`, `conv_dim`, `lr_warmup` in percent) are understood too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .config import ConfigError, TrainConfig

KOHYA_DEFAULT_STEPS = 1600  # sd-scripts --max_train_steps default

# sd-scripts name -> TrainConfig field, same meaning and units
SAME = (
    "resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
    "caption_extension", "shuffle_caption", "keep_tokens", "caption_dropout_rate", "caption_tag_dropout_rate",
    "caption_dropout_every_n_epochs", "flip_aug", "random_crop", "prior_loss_weight", "cache_latents",
    "cache_latents_to_disk", "output_name", "output_dir", "network_dim", "network_alpha", "network_dropout",
    "network_weights", "train_batch_size", "gradient_accumulation_steps", "unet_lr", "text_encoder_lr",
    "lr_scheduler", "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power", "max_grad_norm",
    "loss_type", "huber_c", "huber_schedule", "min_snr_gamma", "noise_offset", "min_timestep", "max_timestep",
    "gradient_checkpointing", "cache_text_encoder_outputs", "clip_skip", "seed", "save_every_n_epochs",
    "save_every_n_steps", "save_state", "training_comment", "sample_every_n_steps", "sample_every_n_epochs",
    "zero_terminal_snr", "scale_v_pred_loss_like_noise_pred", "v_pred_like_loss", "debiased_estimation_loss",
    "max_token_length", "weighted_captions",  # fields of the prompt-encoding work; used once TrainConfig has them
)
RENAMED = {"train_data_dir": "train_dir", "reg_data_dir": "reg_dir", "resume": "resume_state",
           "conv_dim": "conv_dim", "conv_alpha": "conv_alpha", "epoch": "max_train_epochs",
           "max_resolution": "resolution"}  # the last four: kohya_ss GUI JSON names
PRECISION = {"no": "fp32", "fp16": "fp16", "bf16": "bf16", "float": "fp32", "fp32": "fp32"}
# Options whose purpose the webui (or this trainer) covers: ignored, with the reason.
COVERED = {
    "pretrained_model_name_or_path": "the tab trains the checkpoint loaded in the webui",
    "v2": "the architecture is detected from the loaded model",
    "v_parameterization": "v-prediction is detected from the loaded model",
    "sdxl": "the architecture is detected from the loaded model",
    "vae": "the loaded model's VAE is used",
    "xformers": "attention is chosen automatically (torch SDPA)",
    "sdpa": "attention is chosen automatically (torch SDPA)",
    "mem_eff_attn": "attention is chosen automatically (torch SDPA)",
    "save_model_as": "LoRA files are always .safetensors",
    "dataset_config": "dataset TOML files are not read; use kohya folder names (10_name) in train_dir",
    "logging_dir": "progress shows in the tab",
    "log_with": "progress shows in the tab",
}


@dataclass
class KohyaImport:
    config: TrainConfig
    ignored: List[Tuple[str, str]] = field(default_factory=list)  # (option, why) for options set in the file
    ignored_off: List[str] = field(default_factory=list)  # unused options that are off/empty there (no effect)
    notes: List[str] = field(default_factory=list)  # how a kohya rule was applied

    def report(self) -> str:
        lines = list(self.notes)
        if self.ignored:
            lines.append("Ignored: " + "; ".join(f"{name} ({why})" for name, why in self.ignored))
        if self.ignored_off:
            lines.append("Also ignored (off or empty in the file): " + ", ".join(self.ignored_off))
        return "\n".join(lines) if lines else "Every option was used."


def flatten(data: Dict[str, Any]) -> Dict[str, Any]:
    """sd-scripts read_config_from_file: [section] tables are merged into one level."""
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _is_off(value) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _network_args(value) -> Dict[str, str]:
    items = value.split() if isinstance(value, str) else list(value or [])
    args = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if sep:
            args[key.strip()] = raw.strip()
    return args


def _optimizer_args(value) -> Dict[str, Any]:
    items = value.split() if isinstance(value, str) else list(value or [])
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if sep:
            out[key.strip()] = _scalar(raw.strip())
    return out


def _scalar(raw: str):
    if "," in raw:
        return [_scalar(p) for p in raw.split(",") if p]
    try:
        return json.loads(raw.lower() if raw.lower() in ("true", "false") else raw)
    except ValueError:
        return raw


def _resolution(value) -> int:
    parts = [int(p) for p in str(value).replace("x", ",").split(",") if p.strip()] if not isinstance(value, int) \
        else [value]
    if len(parts) == 2 and parts[0] != parts[1]:
        raise ValueError(f"{value}: only square training resolutions are supported; buckets cover other shapes")
    return parts[0]


def import_kohya(data: Dict[str, Any]) -> KohyaImport:
    """Map a kohya option dict onto a new TrainConfig (not validated: the caller fills in what is missing)."""
    data = flatten(data)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: Dict[str, Any] = {}
    result = KohyaImport(TrainConfig())

    def ignore(name, why):
        if _is_off(data.get(name)):
            result.ignored_off.append(name)
        else:
            result.ignored.append((name, why))

    for name, value in data.items():
        target = RENAMED.get(name, name if name in SAME else None)
        if target is not None and target in fields:
            if value is None or (value == "" and target not in ("reg_dir", "training_comment")):
                continue
            out[target] = _resolution(value) if target == "resolution" else value
        elif name in ("max_train_steps", "max_train_epochs", "learning_rate", "network_args", "optimizer_type",
                      "optimizer", "optimizer_args", "mixed_precision", "save_precision", "lr_warmup",
                      "network_train_unet_only", "network_train_text_encoder_only", "sample_prompts",
                      "network_module"):
            continue  # handled below
        elif name in COVERED:
            ignore(name, COVERED[name])
        else:
            ignore(name, "not supported here" if target is None else "needs a newer version of this extension")
    _steps(data, out, result)
    _rates(data, out)
    _network(data, out, result, ignore)
    _optimizer(data, out, result, ignore)
    for name, target in (("mixed_precision", "mixed_precision"), ("save_precision", "save_precision")):
        value = data.get(name)
        if not _is_off(value):
            if str(value) in PRECISION:
                out[target] = PRECISION[str(value)]
            else:
                ignore(name, f"{value!r} is not one of {', '.join(PRECISION)}")
    if not _is_off(data.get("lr_warmup")) and "lr_warmup_steps" not in out:  # kohya_ss GUI: percent of steps
        out["lr_warmup_steps"] = float(data["lr_warmup"]) / 100
    _sample_prompts(data, out, result, ignore)
    try:
        result.config = TrainConfig.from_dict(out)
    except ConfigError as exc:
        raise ConfigError(exc.field, f"{str(exc)[len(exc.field) + 2:]} (from the kohya config)") from exc
    return result


def _steps(data, out, result):
    def count(*names):  # first positive value; "" / 0 mean unset (the kohya_ss GUI writes those)
        for name in names:
            value = data.get(name)
            if not _is_off(value) and int(float(value)) > 0:
                return int(float(value))
        return None

    epochs, steps = count("max_train_epochs", "epoch"), count("max_train_steps")
    if epochs:  # sd-scripts: epochs override steps
        out["max_train_epochs"], out["max_train_steps"] = epochs, 0
        if steps:
            result.notes.append(f"max_train_epochs = {epochs} overrides max_train_steps = {steps} (as in kohya)")
    elif steps:
        out["max_train_steps"] = steps
    else:
        out["max_train_steps"] = KOHYA_DEFAULT_STEPS
        result.notes.append(f"neither max_train_epochs nor max_train_steps is set: kohya's default of "
                            f"{KOHYA_DEFAULT_STEPS} steps")


def _rates(data, out):
    lr = data.get("learning_rate")
    for name in ("unet_lr", "text_encoder_lr"):
        value = out.get(name)
        if isinstance(value, (list, tuple)):  # sd-scripts: one text-encoder rate per encoder; one rate here
            value = value[0] if value else None
        if _is_off(value):
            out.pop(name, None)
            if not _is_off(lr):
                out[name] = float(lr)  # kohya: unset part-rates fall back to learning_rate
        else:
            out[name] = float(value)


def _network(data, out, result, ignore):
    args = _network_args(data.get("network_args"))
    unused = []
    for key, value in args.items():
        if key in ("conv_dim", "conv_alpha"):
            out[key] = float(value) if key == "conv_alpha" else int(float(value))
        elif key == "dropout":
            out["network_dropout"] = float(value)
        else:
            unused.append(f"{key}={value}")
    if unused:
        result.ignored.append(("network_args", "not supported here: " + " ".join(unused)))
    module = data.get("network_module")
    if not _is_off(module) and module != "networks.lora":
        result.ignored.append(("network_module", f"{module} is not supported; trained as networks.lora"))
    if data.get("network_train_unet_only"):
        out["train_unet"], out["train_text_encoder"] = True, False
    elif data.get("network_train_text_encoder_only"):
        out["train_unet"], out["train_text_encoder"] = False, True
    elif "network_train_unet_only" in data or "network_train_text_encoder_only" in data:
        out["sdxl_unet_only"] = False  # the file says both parts: on SDXL too


def _optimizer(data, out, result, ignore):
    from .config import OPTIMIZERS

    for name in ("optimizer_type", "optimizer"):
        value = data.get(name)
        if _is_off(value):
            continue
        match = next((o for o in OPTIMIZERS if o.lower() == str(value).lower()), None)
        if match is None:
            ignore(name, f"{value} is not available; choose one of {', '.join(OPTIMIZERS)}")
        else:
            out["optimizer"] = match
        break
    if not _is_off(data.get("optimizer_args")):
        out["optimizer_args"] = _optimizer_args(data["optimizer_args"])


def _sample_prompts(data, out, result, ignore):
    value = data.get("sample_prompts")
    if _is_off(value):
        return
    path = Path(str(value)).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        out["sample_prompts"] = [ln for ln in lines if ln and not ln.startswith("#")]
    else:
        ignore("sample_prompts", "only a readable .txt prompt file is read; paste the prompts into Preview prompts")


def parse_text(text: str, name: str = "") -> Dict[str, Any]:
    """JSON or TOML text -> dict (a .json/.toml `name` decides; otherwise JSON is tried first)."""
    if not name.lower().endswith(".toml"):
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("a kohya config is a table of options")
            return data
        except json.JSONDecodeError:
            if name.lower().endswith(".json"):
                raise
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (the webui's)
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ValueError("reading TOML needs Python 3.11+ or the tomli package; `pip install tomli` in the "
                             "webui's venv, or use the config as JSON") from None
    return tomllib.loads(text)


def load_kohya_config(path) -> KohyaImport:
    path = Path(path)
    return import_kohya(parse_text(path.read_text(encoding="utf-8"), path.name))
