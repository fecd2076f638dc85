"""One kohya LoRA pair (down, up, alpha) and the per-instance forward override that applies it to a live module.

The override never replaces a module's class or weights: it sets `module.forward` on the instance and calls the
forward the module would otherwise have run, looked up at call time (`type(m).forward`), so class-level patches
such as the webui's Lora extension (webui-integration.md §4.4) keep running, whether installed before or after us.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_MISSING = object()


class LoRAModuleBase(nn.Module):
    """`multiplier · (alpha / rank) · up(dropout(down(x)))` with kohya's init; the weights are always fp32."""

    weight_shape: tuple  # shape of the target weight this LoRA adds to (set by subclasses)

    def __init__(self, lora_name: str, lora_down: nn.Module, lora_up: nn.Module, rank: int,
                 alpha: float | None, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"{lora_name}: rank must be >= 1, got {rank}")
        self.lora_name = lora_name
        self.rank = int(rank)
        self.alpha = float(alpha) if alpha else float(rank)  # kohya: alpha None or 0 means alpha = rank (scale 1)
        self.dropout = float(dropout)
        self.multiplier = 1.0
        self.lora_down = lora_down.float()
        self.lora_up = lora_up.float()
        self.reset_parameters()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def reset_parameters(self) -> None:
        # microsoft/LoRA and kohya: the network starts as an exact no-op
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def lora_output(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA branch for input `x`, computed with the fp32 LoRA weights (callers cast to the base dtype)."""
        hidden = self.lora_down(x.to(self.lora_down.weight.dtype))
        if self.training and self.dropout > 0:
            hidden = F.dropout(hidden, p=self.dropout)  # kohya `network_dropout`: neuron dropout on down's output
        return self.lora_up(hidden) * (self.multiplier * self.scale)

    def delta_weight(self) -> torch.Tensor:
        """`multiplier · scale · up @ down` in the target weight's shape (fp32): what a loader merges."""
        product = self.lora_up.weight.flatten(1) @ self.lora_down.weight.flatten(1)
        return product.reshape(self.weight_shape) * (self.multiplier * self.scale)

    def make_override(self, target: nn.Module) -> ForwardOverride:
        """Linear and Conv2d: output = original output + LoRA branch, in the original output's dtype."""

        def add_lora(call_original, *args, **kwargs):
            out = call_original(*args, **kwargs)
            x = args[0] if args else kwargs["input"]
            return out + self.lora_output(x).to(out.dtype)

        return ForwardOverride(target, add_lora, owner=self)

    def extra_repr(self) -> str:
        return f"{self.lora_name}: rank={self.rank}, alpha={self.alpha:g}, dropout={self.dropout:g}"


class ForwardOverride:
    """Installs `wrapper(call_original, *args, **kwargs)` as one module instance's `forward`, and removes it exactly.

    `call_original` runs the forward the instance had before (an earlier instance override, else the class's,
    resolved at call time). If someone else overrides the same instance after us, removal cannot restore the
    instance exactly; our wrapper then turns into a pass-through so the other override keeps working.
    """

    def __init__(self, module: nn.Module, wrapper: Callable, owner=None):
        self.module = module
        self.owner = owner  # the LoRA object that applies through this override
        self._wrapper = wrapper
        self._installation = None  # (our forward, the forward we replaced, mutable "active" flag)

    @property
    def installed(self) -> bool:
        return self._installation is not None

    def install(self) -> None:
        if self.installed:
            return
        module, wrapper = self.module, self._wrapper
        previous = module.__dict__.get("forward", _MISSING)
        active = [True]

        def call_original(*args, **kwargs):
            if previous is not _MISSING:
                return previous(*args, **kwargs)
            return type(module).forward(module, *args, **kwargs)

        def forward(*args, **kwargs):
            if not active[0]:
                return call_original(*args, **kwargs)
            return wrapper(call_original, *args, **kwargs)

        self._installation = (forward, previous, active)
        module.__dict__["forward"] = forward  # bypasses Module.__setattr__: nothing registered, state dict untouched

    def remove(self) -> None:
        if not self.installed:
            return
        forward, previous, active = self._installation
        self._installation = None
        active[0] = False
        instance_dict = self.module.__dict__
        if instance_dict.get("forward") is not forward:
            warnings.warn(f"{type(self.module).__name__}.forward was overridden again after the LoRA attached; "
                          "leaving that override in place (the LoRA part is now a pass-through).", stacklevel=3)
        elif previous is _MISSING:
            del instance_dict["forward"]
        else:
            instance_dict["forward"] = previous
