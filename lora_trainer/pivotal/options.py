"""Validation and warnings for the pivotal-tuning and Prodigy options (called from TrainConfig.validate)."""

from __future__ import annotations

import re
from typing import List

# The token is a webui embedding name (a file stem) and a `bundle_emb.<token>.` key part: no dots or spaces.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRODIGY_LR_RANGE = (0.5, 2.0)


def validate_pivotal_and_prodigy(config) -> None:
    from ..config import ConfigError

    c = config
    if c.prodigy_d_coef <= 0:
        raise ConfigError("prodigy_d_coef", f"must be > 0, got {c.prodigy_d_coef}")
    if c.prodigy_weight_decay < 0:
        raise ConfigError("prodigy_weight_decay", f"must be >= 0, got {c.prodigy_weight_decay}")
    if not c.pivotal_tuning:
        return
    c.pivotal_token = c.pivotal_token.strip()
    if not TOKEN_RE.match(c.pivotal_token):
        raise ConfigError("pivotal_token", f"{c.pivotal_token!r}: use one word of letters, digits, - or _ "
                                           "(e.g. zkw), the word you will type in prompts")
    if not 1 <= c.pivotal_vectors_per_token <= 16:
        raise ConfigError("pivotal_vectors_per_token", f"must be 1..16, got {c.pivotal_vectors_per_token}")
    if not 0.0 < c.pivotal_frac <= 1.0:
        raise ConfigError("pivotal_frac", f"must be in (0, 1], got {c.pivotal_frac}")
    if c.pivotal_lr < 0:
        raise ConfigError("pivotal_lr", f"must be >= 0, got {c.pivotal_lr}")
    if not (c.pivotal_init or "").strip():
        c.pivotal_init = "random"
    if c.cache_text_encoder_outputs:
        raise ConfigError("cache_text_encoder_outputs", "pivotal tuning changes the token embeddings every step, "
                                                        "so text-encoder outputs cannot be cached; turn one off")
    if not c.trigger_word.strip():
        c.trigger_word = c.pivotal_token  # captions without the token would never train its vectors


def pivotal_lr(config) -> float:
    return float(config.pivotal_lr or config.text_encoder_lr or config.unet_lr)


def trained_lrs(config) -> List[float]:
    lrs = []
    if config.train_unet:
        lrs.append(float(config.unet_lr))
    if config.train_text_encoder:
        lrs.append(float(config.text_encoder_lr))
    if config.pivotal_tuning:
        lrs.append(pivotal_lr(config))
    return lrs


def config_warnings(config) -> List[str]:
    """Advice that does not stop a run (logged when training starts, shown by the tab's recipe note)."""
    out = []
    if config.optimizer == "Prodigy":
        low, high = PRODIGY_LR_RANGE
        far = sorted({lr for lr in trained_lrs(config) if lr and not low <= lr <= high})
        if far:
            out.append(f"Prodigy: learning rate {', '.join(f'{v:g}' for v in far)} is far from 1.0. Prodigy "
                       "estimates the step size itself and the learning rate only multiplies that estimate, so "
                       "use 1.0 (lower prodigy_d_coef to learn more gently)")
    if config.pivotal_tuning and config.trigger_word.strip() and config.pivotal_token not in config.trigger_word:
        out.append(f"pivotal tuning: the trigger word {config.trigger_word!r} does not contain the token "
                   f"{config.pivotal_token!r}; only captions that contain the token train its vectors")
    return out
