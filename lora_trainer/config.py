"""The one typed training config. The UI, the CLI (`train --config`) and the HTTP API only build this object;
the engine reads nothing else. Defaults are what a webui user training a character/style LoRA should start from
(README "Options" explains each)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "Adafactor", "SGD")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
LOSS_TYPES = ("l2", "huber")
HUBER_SCHEDULES = ("snr", "exponential", "constant")
_NAME_RE = re.compile(r"^[^/\\:*?\"<>|\x00-\x1f]+$")


class ConfigError(ValueError):
    """A config value is invalid; `field` names it, the message says what to do."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class TrainConfig:
    # --- dataset (kohya folder conventions: train_dir/10_name/*.png + .txt) ---
    train_dir: str = ""
    reg_dir: str = ""
    resolution: int = 0  # 0 = the model's native size: 512 SD1/SD2, 768 SD2-v, 1024 SDXL
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 0  # 0 = 2 × resolution (kohya's SDXL advice; 1024 for 512)
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    trigger_word: str = ""
    flip_aug: bool = False
    random_crop: bool = False
    prior_loss_weight: float = 1.0
    cache_latents: bool = True
    cache_latents_to_disk: bool = False

    # --- network ---
    output_name: str = "my_lora"
    output_dir: str = ""  # the webui fills in its Lora folder
    network_dim: int = 16
    network_alpha: float = 8.0
    conv_dim: int = 0  # 0 = attention-only LoRA (LierLa); >0 adds ResBlock/sampler convs (C3Lier / LoCon)
    conv_alpha: float = 1.0
    network_dropout: float = 0.0
    network_weights: str = ""  # start from an existing LoRA file
    train_unet: bool = True
    train_text_encoder: bool = True

    # --- training ---
    max_train_epochs: int = 10
    max_train_steps: int = 0  # > 0 overrides epochs
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    unet_lr: float = 1e-4
    text_encoder_lr: float = 5e-5
    optimizer: str = "AdamW"
    optimizer_args: dict = field(default_factory=dict)
    lr_scheduler: str = "constant"
    lr_warmup_steps: float = 0.0  # int steps, or a fraction (< 1) of the total
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    loss_type: str = "l2"
    huber_c: float = 0.1
    huber_schedule: str = "snr"  # kohya's default: c shrinks as noise grows
    min_snr_gamma: float = 0.0  # 0 = off; 5 is the paper's value
    # --- kohya semantics (issue 11): SDXL default, v-prediction loss options; see lora_trainer/kohya_semantics.py ---
    sdxl_unet_only: bool = True  # SDXL: train the UNet only even when train_text_encoder is on (kohya's advice)
    zero_terminal_snr: bool = False  # rescale the schedule so the last step is pure noise (for v-prediction)
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float = 0.0  # 0 = off
    debiased_estimation_loss: bool = False
    noise_offset: float = 0.0
    min_timestep: int = 0
    max_timestep: int = 1000
    mixed_precision: str = "auto"  # auto: bf16 where the GPU has it, else fp16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = True
    cache_text_encoder_outputs: bool = False  # only when the text encoder is not trained and captions are fixed
    clip_skip: int = 0  # 0 = the webui's Clip skip setting at start (1 outside the webui); SD1 only
    # --- prompt encoding (issue 11): captions encoded as the webui encodes prompts ---
    max_token_length: int = 225  # 75 / 150 / 225: caption tokens kept, in 75-token chunks (kohya's name)
    weighted_captions: bool = False  # parse (tag:1.2) / [tag] emphasis as the webui; off = brackets are text
    seed: int = 42

    # --- saving ---
    save_precision: str = "fp16"
    save_every_n_epochs: int = 0
    save_every_n_steps: int = 0
    save_state: bool = False  # also write <name>-state/ to resume exactly
    resume_state: str = ""
    overwrite: bool = False
    training_comment: str = ""

    # --- previews (webui only) ---
    sample_prompts: list = field(default_factory=list)
    sample_every_n_steps: int = 0
    sample_every_n_epochs: int = 0
    sample_seed: int = 1234
    sample_steps: int = 20
    sample_cfg_scale: float = 7.0
    sample_weights: list = field(default_factory=lambda: [0.0, 1.0])  # base vs LoRA side by side

    # ------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad field; return self."""
        if not self.train_dir:
            raise ConfigError("train_dir", "choose the folder with your training images")
        name = self.output_name.strip()
        if not name or not _NAME_RE.match(name) or name in (".", "..") or ".." in name:
            raise ConfigError("output_name", f"{self.output_name!r} is not a file name; use letters, digits, - and _")
        _positive(self, "network_dim", "train_batch_size", "gradient_accumulation_steps", "bucket_reso_steps")
        _non_negative(self, "resolution", "max_train_epochs", "max_train_steps", "conv_dim", "keep_tokens",
                      "save_every_n_epochs", "save_every_n_steps", "sample_every_n_steps", "sample_every_n_epochs",
                      "max_grad_norm", "min_snr_gamma", "noise_offset", "lr_warmup_steps", "min_bucket_reso",
                      "max_bucket_reso", "unet_lr", "text_encoder_lr", "prior_loss_weight", "clip_skip",
                      "v_pred_like_loss")
        for name_ in ("network_dropout", "caption_dropout_rate", "caption_tag_dropout_rate"):
            v = getattr(self, name_)
            if not 0.0 <= v < 1.0:
                raise ConfigError(name_, f"must be in [0, 1), got {v}")
        if self.max_train_epochs == 0 and self.max_train_steps == 0:
            raise ConfigError("max_train_epochs", "set epochs or max_train_steps")
        if self.network_alpha <= 0:
            raise ConfigError("network_alpha", "must be > 0 (kohya: alpha = rank means scale 1)")
        if self.resolution and self.resolution % 64:
            raise ConfigError("resolution", f"must be a multiple of 64, got {self.resolution}")
        if not 0 <= self.min_timestep < self.max_timestep <= 1000:
            raise ConfigError("max_timestep", "need 0 <= min_timestep < max_timestep <= 1000")
        if not (self.train_unet or self.train_text_encoder):
            raise ConfigError("train_unet", "train the UNet, the text encoder, or both")
        if self.cache_text_encoder_outputs and self.train_text_encoder and not self.sdxl_unet_only:
            raise ConfigError("cache_text_encoder_outputs", "cannot cache text-encoder outputs while training it")
        for fname, allowed in (("optimizer", OPTIMIZERS), ("lr_scheduler", SCHEDULERS),
                               ("mixed_precision", PRECISIONS), ("save_precision", SAVE_PRECISIONS),
                               ("loss_type", LOSS_TYPES), ("huber_schedule", HUBER_SCHEDULES)):
            if getattr(self, fname) not in allowed:
                raise ConfigError(fname, f"{getattr(self, fname)!r} is not one of {', '.join(allowed)}")
        if self.loss_type == "huber" and not 0 < self.huber_c <= 1:
            raise ConfigError("huber_c", f"must be in (0, 1] for the Huber loss, got {self.huber_c}")
        _validate_prompt_encoding(self)
        if not self.caption_extension.startswith("."):
            self.caption_extension = "." + self.caption_extension
        return self

    # ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(unknown[0], "unknown option (known options: see README 'Options')")
        kwargs = {}
        for key, value in data.items():
            kwargs[key] = _coerce(key, value, cls.__dataclass_fields__[key].default,
                                  known[key].default_factory)  # type: ignore[misc]
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix == ".toml":
            path.write_text(_to_toml(self.to_dict()), encoding="utf-8")
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10 (the webui's)
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        return cls.from_dict(data)

    # derived values -----------------------------------------------------
    def warmup_steps(self, total_steps: int) -> int:
        w = self.lr_warmup_steps
        return int(math.floor(w * total_steps)) if 0 < w < 1 else int(w)  # kohya: int(ratio * total), down


def _validate_prompt_encoding(cfg) -> None:
    if not 0 <= cfg.clip_skip <= 12:
        raise ConfigError("clip_skip", f"must be 0 (follow the webui) or 1-12 (CLIP's layers), got {cfg.clip_skip}")
    if cfg.max_token_length not in (75, 150, 225):
        raise ConfigError("max_token_length", f"must be 75, 150 or 225 (one to three 75-token chunks), "
                                              f"got {cfg.max_token_length}")


def _positive(cfg, *names):
    for n in names:
        if getattr(cfg, n) <= 0:
            raise ConfigError(n, f"must be > 0, got {getattr(cfg, n)}")


def _non_negative(cfg, *names):
    for n in names:
        if getattr(cfg, n) < 0:
            raise ConfigError(n, f"must be >= 0, got {getattr(cfg, n)}")


def _coerce(key, value, default, factory):
    """Accept the loose types forms and JSON send (\"16\", 16.0, \"true\") and convert to the field's type."""
    target = type(factory()) if factory is not dataclasses.MISSING else type(default)
    try:
        if target is bool:
            if isinstance(value, str):
                if value.strip().lower() in ("1", "true", "yes", "on"):
                    return True
                if value.strip().lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if target is int:
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if target is float:
            return float(value)
        if target is str:
            return "" if value is None else str(value)
        if target is list:
            if isinstance(value, str):
                return [v for v in (s.strip() for s in value.splitlines()) if v]
            return list(value)
        if target is dict:
            if isinstance(value, str):
                return json.loads(value) if value.strip() else {}
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, f"expected {target.__name__}, got {value!r}") from exc
    return value


def _to_toml(data: dict) -> str:
    lines = []
    for k, v in data.items():
        if isinstance(v, dict):
            continue
        lines.append(f"{k} = {json.dumps(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"
