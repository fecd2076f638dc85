"""Gradient checkpointing on the webui's own UNet, for ldm (SD1/SD2) and sgm (SDXL) block classes.

The webui forces the models' built-in `use_checkpoint` off, and its own sd_hijack_checkpoint patches ldm classes
only, with *reentrant* checkpointing — which gives no gradient at all when no input of a block requires grad
(frozen base + LoRA inside the block: webui-integration.md §3.10). So instead each block *instance* gets a
`forward` that runs its previous forward under `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`;
the LoRA parameters used inside are found by autograd during the recomputation. `remove()` puts back exactly
what was there (the instance attribute is deleted, or the previous one restored).
"""

from __future__ import annotations

import functools
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# ldm/sgm blocks that hold the bulk of the activations (sgm has the same class names)
CHECKPOINTED_CLASSES = ("BasicTransformerBlock", "ResBlock", "AttentionBlock")
_MISSING = object()


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)  # sampling / no_grad: nothing to save memory on
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


class GradientCheckpointing:
    def __init__(self, root: nn.Module, class_names: Tuple[str, ...] = CHECKPOINTED_CLASSES):
        self.root = root
        self.class_names = class_names
        self._patched: List[Tuple[nn.Module, object]] = []

    @property
    def enabled(self) -> bool:
        return bool(self._patched)

    def enable(self) -> GradientCheckpointing:
        if self._patched:
            return self
        for module in self.root.modules():
            if type(module).__name__ in self.class_names:
                previous = module.__dict__.get("forward", _MISSING)
                module.forward = functools.partial(_checkpointed, module.forward)
                self._patched.append((module, previous))
        return self

    def remove(self) -> None:
        for module, previous in reversed(self._patched):
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        self._patched.clear()

    def __enter__(self):
        return self.enable()

    def __exit__(self, *exc):
        self.remove()
        return False
