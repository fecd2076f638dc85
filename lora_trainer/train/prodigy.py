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


def check_prodigy_groups(config, groups: List[dict]) -> None:
    """Prodigy refuses (at its first step) groups whose non-zero learning rates differ: say so before training,
    naming the parts. Checked on the real groups, so parts this run does not train (SDXL UNet only) do not count."""
    from .errors import TrainError

    if config.optimizer != "Prodigy":
        return
    lrs = {g.get("name", "?"): g["lr"] for g in groups if g.get("lr")}
    if len(set(lrs.values())) > 1:
        shown = ", ".join(f"{name} {lr:g}" for name, lr in lrs.items())
        raise TrainError(f"unet_lr: Prodigy needs one learning rate for every trained part (it estimates a single "
                         f"step size); this run has {shown}. Use 1.0 for the UNet, text encoder and pivotal "
                         "learning rates (pivotal 0 = the text encoder's)")


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
