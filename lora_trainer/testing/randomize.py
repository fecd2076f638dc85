"""Deterministic random weights for tiny models.

Default inits leave zero-initialised output convs (ldm's `zero_module`) and LayerNorms at weight 1 / bias 0; with
those, a tiny UNet's output ignores most layers and a tiny text encoder can produce all-zero rows. Random values
everywhere make every layer matter, so tests can see a LoRA on any module change the output.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if p.ndim <= 1:
            base = 1.0 if p.numel() > 0 and torch.all(p == 1) else 0.0  # norm weights stay near 1
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    return module
