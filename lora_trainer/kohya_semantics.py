"""Config rules that depend on the architecture, as kohya sd-scripts applies them, resolved once the loaded model
is known (the tab and the CLI build a TrainConfig before anyone knows whether it is SD1 or SDXL).

- `bucket_reso_steps` must divide by 64 on SD1/SD2 (train_network.py `verify_bucket_reso_steps(64)`) and by 32 on
  SDXL (sdxl_train_network.py `verify_bucket_reso_steps(32)`): bucket sides are latent sizes the UNet's
  down/up-sampling must round-trip.
- SDXL trains the UNet only by default (`sdxl_unet_only`): kohya's SDXL LoRA docs recommend
  `--network_train_unet_only`, because its two text encoders are easily overtrained and cost memory.
"""

from __future__ import annotations

import dataclasses

from .config import ConfigError, TrainConfig

BUCKET_STEP = {"sd1": 64, "sd2": 64, "sd2v": 64, "sdxl": 32}


def trains_text_encoder(config: TrainConfig, arch: str) -> bool:
    """Whether this run trains the text encoder(s) on `arch`. On SDXL `sdxl_unet_only` wins, except when the UNet is
    not trained at all (then the user explicitly asked for the text encoders only)."""
    if not config.train_text_encoder:
        return False
    return not (arch == "sdxl" and config.sdxl_unet_only and config.train_unet)


def for_arch(config: TrainConfig, arch: str) -> TrainConfig:
    """A copy of `config` with the architecture's rules applied (the caller's object is left as it was).
    Raises ConfigError naming the field when a value is wrong for this architecture."""
    step = BUCKET_STEP.get(arch, 64)
    if config.bucket_reso_steps % step:
        raise ConfigError("bucket_reso_steps", f"must be a multiple of {step} for {arch.upper()} (kohya), got "
                                               f"{config.bucket_reso_steps}; use {step} or {2 * step}")
    text_encoder = trains_text_encoder(config, arch)
    if config.cache_text_encoder_outputs and text_encoder:
        raise ConfigError("cache_text_encoder_outputs", "cannot cache text-encoder outputs while training it")
    return dataclasses.replace(config, train_text_encoder=text_encoder)


def arch_note(arch: str, prediction_type: str = "epsilon") -> str:
    """One line for the tab's model line: what will be trained and against which target."""
    parts = []
    if arch == "sdxl":
        parts.append("SDXL trains the UNet only unless 'SDXL: UNet only' is unticked (kohya's advice)")
    if prediction_type == "v":
        parts.append("v-prediction model: trains against the v target")
    return "; ".join(parts)
