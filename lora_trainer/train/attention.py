"""Fused attention while training, for ldm's stock `CrossAttention` (SD1/SD2).

ldm's `CrossAttention.forward` materialises the whole attention matrix, upcast to fp32 (at 512 px: 8 heads × 4096²
floats per layer), and keeps it for the backward pass. `torch.nn.functional.scaled_dot_product_attention` computes
the same softmax(QKᵀ·d^-½)V fused (flash / memory-efficient kernels on GPU), which is what diffusers' trainer uses.
The session enables it on CUDA only: on CPU there is no fused kernel to win and it measured ~5 % slower.

Only modules whose class still has ldm's own forward are switched: when the webui has installed a cross-attention
optimization (xformers, sdp, Doggettx... — class-level patches), or for sgm's CrossAttention (already SDPA), the
user's choice stays. Each switched instance gets a `forward` attribute; `remove()` deletes exactly those.
"""

from __future__ import annotations

import types
from typing import List

import torch.nn.functional as F
from torch import nn


def _is_stock_ldm_attention(module: nn.Module) -> bool:
    forward = getattr(type(module), "forward", None)
    return (type(module).__name__ == "CrossAttention" and getattr(forward, "__module__", "") == "ldm.modules.attention"
            and "forward" not in module.__dict__ and all(hasattr(module, a) for a in ("to_q", "to_k", "to_v",
                                                                                     "to_out", "heads")))


def sdpa_forward(self, x, context=None, mask=None):
    if mask is not None:  # SpatialTransformer never passes one; keep ldm's semantics if someone does
        return type(self).forward(self, x, context, mask)
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, inner = q.shape
    q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(dim_head) == ldm's self.scale
    return self.to_out(out.transpose(1, 2).reshape(b, n, inner))


class FusedAttention:
    def __init__(self, root: nn.Module):
        self.root = root
        self._patched: List[nn.Module] = []

    def enable(self) -> FusedAttention:
        if not self._patched:
            for module in self.root.modules():
                if _is_stock_ldm_attention(module):
                    module.forward = types.MethodType(sdpa_forward, module)
                    self._patched.append(module)
        return self

    @property
    def count(self) -> int:
        return len(self._patched)

    def remove(self) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)
        self._patched.clear()
