"""Clip skip follows the webui: `clip_skip = 0` in the config means "what the webui's *Clip skip* setting says when
the job starts" (SD1 only: the webui applies it to SD1 prompts and ignores it for SD2 and, by default, SDXL).
Anime SD1 checkpoints are used at clip skip 2; a LoRA trained at 1 on them is then tested at 2."""

from __future__ import annotations

import html

from lora_trainer.config import TrainConfig
from lora_trainer.ui.host import Host


def resolve_clip_skip(host: Host, config: TrainConfig, arch: str) -> int:
    """Fill in `config.clip_skip` when it is 0 (follow the webui) and return it; an explicit value is kept."""
    if config.clip_skip == 0:
        config.clip_skip = host.clip_skip() if arch == "sd1" else 1
    return config.clip_skip


def clip_skip_note(host: Host, arch: str) -> str:
    """The tab's note beside the model line, e.g. 'Clip skip 2 (webui setting)'."""
    if arch != "sd1":
        return f"Clip skip does not apply to {arch.upper()} (the webui ignores it there too)."
    value = host.clip_skip()
    return (f"**Clip skip {value}** (webui setting) — training encodes captions as txt2img encodes prompts; "
            f"set *Clip skip (0 = webui setting)* under Training ▸ Advanced to override.").replace("\n", " ")


def clip_skip_markdown(host: Host, arch: str) -> str:
    try:
        return clip_skip_note(host, arch)
    except Exception as exc:  # a broken setting never hides the model line
        return html.escape(f"Clip skip: unknown ({exc})")
