"""LoRA on OpenCLIP's fused attention (SD2 text encoder, SDXL TE2): one `nn.MultiheadAttention` whose
`in_proj_weight` [3d, d] stacks the q, k, v projections, plus `out_proj`.

kohya's files hold four separate Linear LoRAs (`self_attn_{q,k,v,out}_proj`); q/k/v act on the row blocks
[0:d], [d:2d], [2d:3d]. `MultiheadAttention.forward` reads those weights directly and never calls
`out_proj.forward`, so the override works at the MHA level: for one call it shadows the weights with
`W + ΔW` through the instance `__dict__` (the registered Parameters, the state dict and the base weights are
untouched) and runs the original forward, which is exactly the forward of a merged model.
Neuron dropout sits on each LoRA's hidden activations and cannot be merged into a weight; while it is active the
override projects q/k/v itself (base + LoRA branch) and runs the original forward with identity projections.

The merge is only used on fp32 weights without autocast. On an fp16/bf16 text encoder (the webui's) or under
autocast, `W + ΔW` would be rounded to the low-precision grid W already sits on, and a small update vanishes (at
|ΔW| ≈ 1e-6 about three quarters of it in fp16). There the separate path runs, all in fp32 like kohya's separate
LoRA branch: frozen projection (upcast, exact) + fp32 LoRA branch, the attention itself in fp32, and the result is
returned in the dtype the merged forward would have returned.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .base import ForwardOverride
from .linear import LinearLoRA

_QKV_NAMES = ("query", "key", "value")


@contextmanager
def _shadowed(module: nn.Module, **tensors):
    """Make `module.<name>` return the given tensor for the duration (instance attributes win over `__getattr__`)."""
    instance_dict = module.__dict__
    clashes = [name for name in tensors if name in instance_dict]
    if clashes:
        raise RuntimeError(f"{type(module).__name__} already has instance attributes {clashes}; re-entrant LoRA call?")
    instance_dict.update(tensors)
    try:
        yield
    finally:
        for name in tensors:
            instance_dict.pop(name, None)


def _split_qkv(args: tuple, kwargs: dict):
    """(query, key, value), remaining positional args, remaining kwargs, as MultiheadAttention.forward takes them."""
    kwargs = dict(kwargs)
    qkv = list(args[:3]) + [kwargs.pop(name) for name in _QKV_NAMES[len(args[:3]):]]
    return qkv, args[3:], kwargs


class MultiheadAttentionLoRA:
    """Groups the q, k, v and out LinearLoRAs of one fused attention and overrides that attention's forward."""

    def __init__(self, attention: nn.MultiheadAttention, q: LinearLoRA, k: LinearLoRA, v: LinearLoRA, out: LinearLoRA):
        if not getattr(attention, "_qkv_same_embed_dim", False) or attention.in_proj_weight is None:
            raise ValueError("only MultiheadAttention with a fused in_proj_weight (OpenCLIP) is supported")
        self.attention = attention
        self.q, self.k, self.v, self.out = q, k, v, out
        self.prefer_unfused = False  # tests force the dropout-capable path with this

    @staticmethod
    def create(attention: nn.MultiheadAttention, names: list, rank, alpha, dropout: float = 0.0):
        """`names` in q, k, v, out order; `rank`/`alpha` are one value or one per projection (from a file)."""
        d, device = attention.embed_dim, attention.in_proj_weight.device
        ranks = list(rank) if isinstance(rank, (list, tuple)) else [rank] * 4
        alphas = list(alpha) if isinstance(alpha, (list, tuple)) else [alpha] * 4
        loras = [LinearLoRA(n, d, d, r, a, dropout, device=device) for n, r, a in zip(names, ranks, alphas)]
        return MultiheadAttentionLoRA(attention, *loras)

    @property
    def loras(self) -> list:
        return [self.q, self.k, self.v, self.out]

    def make_override(self) -> ForwardOverride:
        return ForwardOverride(self.attention, self._forward, owner=self)

    def _forward(self, call_original, *args, **kwargs):
        dropout_active = any(lora.training and lora.dropout > 0 for lora in self.loras)
        weight = self.attention.in_proj_weight
        low_precision = weight.dtype != torch.float32 or _autocast_enabled(weight.device.type)
        if dropout_active or self.prefer_unfused or low_precision:
            return self.forward_unfused(call_original, *args, **kwargs)
        return self.forward_merged(call_original, *args, **kwargs)

    def forward_merged(self, call_original, *args, **kwargs):
        attention = self.attention
        w_in, w_out = attention.in_proj_weight, attention.out_proj.weight
        delta_in = torch.cat([self.q.delta_weight(), self.k.delta_weight(), self.v.delta_weight()])
        with _shadowed(attention, in_proj_weight=w_in + delta_in.to(w_in.dtype)), \
                _shadowed(attention.out_proj, weight=w_out + self.out.delta_weight().to(w_out.dtype)):
            return call_original(*args, **kwargs)

    def forward_unfused(self, call_original, *args, **kwargs):
        """Base projections + LoRA branches computed separately, everything in fp32 (autocast off)."""
        attention = self.attention
        (query, key, value), rest, kwargs = _split_qkv(args, kwargs)
        w_in, b_in = attention.in_proj_weight, attention.in_proj_bias
        device = w_in.device
        result_dtype = _autocast_dtype(device.type) if _autocast_enabled(device.type) else query.dtype
        rest, kwargs = tuple(_fp32(a) for a in rest), {k: _fp32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device.type, enabled=False):
            w_q, w_k, w_v = w_in.float().chunk(3)
            b_q, b_k, b_v = b_in.float().chunk(3) if b_in is not None else (None, None, None)
            q, k, v = (F.linear(x.float(), w, b) + lora.lora_output(x.float()) for x, w, b, lora in
                       ((query, w_q, b_q, self.q), (key, w_k, b_k, self.k), (value, w_v, b_v, self.v)))
            eye = torch.eye(attention.embed_dim, dtype=torch.float32, device=device)
            # identity projections: the original forward now does only the attention itself (multiplying by I is exact)
            with _shadowed(attention, in_proj_weight=torch.cat([eye, eye, eye]), in_proj_bias=None), \
                    _shadowed(attention.out_proj, weight=eye, bias=None):
                attended, weights = call_original(q, k, v, *rest, **kwargs)
            out_proj = attention.out_proj
            bias = out_proj.bias.float() if out_proj.bias is not None else None
            out = F.linear(attended, out_proj.weight.float(), bias) + self.out.lora_output(attended)
        return out.to(result_dtype), (weights.to(result_dtype) if weights is not None else None)


def _fp32(value):
    """Floating tensors (a float attention mask) follow the fp32 attention; bool masks and flags stay as they are."""
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _autocast_dtype(device_type: str) -> torch.dtype:
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()
