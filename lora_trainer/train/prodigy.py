"""Prodigy's arguments from the config, and per-part weight decay (the HF SDXL recipe: 1e-4 UNet, 1e-3 TE).

Prodigy (Mishchenko & Defazio) estimates the step size d itself; the learning rate only multiplies it, so 1.0 is
the value to use, and every trained parameter group must share it (or be 0) — Prodigy itself refuses otherwise.
`optimizer_args` entries override the fields here."""

from __future__ import annotations

from typing import List


def prodigy_args(config) -> dict:
    c = config
    if c.optimizer != "Prodigy":
        return dict(c.optimizer_args or {})
    args = {"d_coef": float(c.prodigy_d_coef), "safeguard_warmup": bool(c.prodigy_safeguard_warmup),
            "use_bias_correction": bool(c.prodigy_use_bias_correction), "decouple": bool(c.prodigy_decouple),
            "weight_decay": float(c.prodigy_weight_decay)}
    args.update(c.optimizer_args or {})
    return args


def text_encoder_weight_decay(config):
    """The weight decay for text-encoder groups (TE LoRA, pivotal embeddings), or None = the optimizer's."""
    c = config
    if c.optimizer == "Prodigy" and c.prodigy_te_weight_decay >= 0 and "weight_decay" not in (c.optimizer_args or {}):
        return float(c.prodigy_te_weight_decay)
    return None


def apply_group_weight_decay(config, groups: List[dict]) -> List[dict]:
    decay = text_encoder_weight_decay(config)
    if decay is not None:
        for group in groups:
            if group.get("name") == "textencoder":
                group["weight_decay"] = decay
    return groups
