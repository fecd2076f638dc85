"""Make Forge's UNet differentiable without touching its code.

Forge's `BasicTransformerBlock._forward` (backend/nn/unet.py) adds the attention outputs into `x` in place
(`x += n`) right after `norm1(x)` / `norm2(x)` read it, and `x` is the block's own input. LayerNorm keeps its
input for the backward pass, and so does gradient checkpointing (the block's input), so once a LoRA makes `x`
require grad autograd refuses ("modified by an inplace operation"). While training, those two norms and the block
get a per-instance `forward` that works on a copy; `remove()` deletes exactly those attributes. With grad disabled
(previews, Forge's own sampling) nothing is copied, so inference runs Forge's code as is.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

INPLACE_NORMS = ("norm1", "norm2")  # the norms whose input is added to in place afterwards


def _is_forge_block(module: nn.Module) -> bool:
    forward = getattr(type(module), "_forward", None)
    return type(module).__name__ == "BasicTransformerBlock" and getattr(forward, "__module__", "") == "backend.nn.unet"


class InplaceSafeNorms:
    """Install before GradientCheckpointing (which then wraps the block's copying forward), remove after it."""

    def __init__(self, root: nn.Module):
        self.root = root
        self._patched: List[tuple] = []

    @property
    def count(self) -> int:
        """Transformer blocks made safe."""
        return sum(1 for module, _ in self._patched if _is_forge_block(module))

    def enable(self) -> InplaceSafeNorms:
        if self._patched:
            return self
        for block in self.root.modules():
            if not _is_forge_block(block):
                continue
            for module in [block] + [getattr(block, name, None) for name in INPLACE_NORMS]:
                if isinstance(module, nn.Module) and "forward" not in module.__dict__:
                    forward = _copying_forward(module)
                    module.__dict__["forward"] = forward
                    self._patched.append((module, forward))
        return self

    def remove(self) -> None:
        for module, forward in self._patched:
            if module.__dict__.get("forward") is forward:
                del module.__dict__["forward"]
        self._patched.clear()

    def __enter__(self):
        return self.enable()

    def __exit__(self, *exc):
        self.remove()
        return False


def _copying_forward(module: nn.Module):
    def forward(x, *args, **kwargs):
        if torch.is_grad_enabled() and x.requires_grad:
            x = x.clone()  # the block's `x += n` then changes the copy, not a tensor saved for backward
        return type(module).forward(module, x, *args, **kwargs)

    return forward
