"""When the plan does not fit: the single changes that lower it, each re-planned, ordered by what they save."""

from __future__ import annotations

import dataclasses


def _candidates(c):
    if not c.gradient_checkpointing:
        yield "turn on gradient checkpointing", {"gradient_checkpointing": True}
    if c.optimizer in ("AdamW", "Lion", "Prodigy"):
        yield f"{c.optimizer}8bit" if c.optimizer != "Prodigy" else "AdamW8bit", \
            {"optimizer": "Lion8bit" if c.optimizer == "Lion" else "AdamW8bit", "optimizer_args": {}}
    if c.train_batch_size > 1:
        yield "batch 1", {"train_batch_size": 1}
    if c.train_text_encoder:
        yield "don't train the text encoder", {"train_text_encoder": False}
    if not c.cache_latents:
        yield "cache latents", {"cache_latents": True}
    if c.network_dim > 32:
        yield "network_dim 32", {"network_dim": 32}
    if c.resolution and c.resolution > 512:
        yield f"resolution {c.resolution - 256}", {"resolution": c.resolution - 256}


def add_suggestions(plan, needed_for, config) -> None:
    from .report import Suggestion

    found = []
    for text, change in _candidates(config):
        saves = plan.needed - needed_for(dataclasses.replace(config, **change))
        if saves > 0:
            found.append(Suggestion(text, saves))
    plan.suggestions = sorted(found, key=lambda s: -s.saves)
