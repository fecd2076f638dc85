"""Tiny checkpoint files written from the project's builders (state dict -> safetensors, the webui's key layout)."""

from __future__ import annotations

from pathlib import Path

import torch

from lora_trainer.checkpoint import save_checkpoint
from lora_trainer.testing import build_tiny_model


def tiny_checkpoint_model(arch: str, seed: int = 0):
    """The tiny model whose weights the checkpoint holds. Random tiny weights carry no eps/v signature, so the SD2-v
    one gets what a real v-model has: at t=999 on a flat input its output is far below the input (the webui's
    test, sd_models_config.is_using_v_parameterization_for_sd2); its output-conv bias is lowered by 3."""
    model = build_tiny_model(arch, seed=seed)
    if arch == "sd2v":
        with torch.no_grad():
            model.model.diffusion_model.out[2].bias -= 3.0
    return model


def write_tiny_checkpoint(arch: str, path: Path, dtype=None, seed: int = 0):
    model = tiny_checkpoint_model(arch, seed)
    return model, save_checkpoint(model, path, dtype=dtype)
