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
|ΔW| ≈ 1e-6 about three quarters of it in fp16). There the separate path runs, like kohya's separate LoRA branch: the
frozen projection as the host computes it, plus the fp32 LoRA branch, summed in fp32; the attention itself runs in
fp32 on those sums, and the result comes back in the dtype the merged forward would have returned.
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
        """Frozen projections as the host computes them (their dtype, autocast as it is), each LoRA branch added in
        fp32 beside them (kohya's separate branch), the attention itself in fp32 on those sums."""
        attention = self.attention
        (query, key, value), rest, kwargs = _split_qkv(args, kwargs)
        w_in, b_in = attention.in_proj_weight, attention.in_proj_bias
        device = w_in.device
        autocast = _autocast_enabled(device.type)
        w_q, w_k, w_v = w_in.chunk(3)
        b_q, b_k, b_v = b_in.chunk(3) if b_in is not None else (None, None, None)
        inputs = ((query, w_q, b_q, self.q), (key, w_k, b_k, self.k), (value, w_v, b_v, self.v))
        base = [F.linear(x, w, b) for x, w, b, _ in inputs]
        result_dtype = base[0].dtype
        rest, kwargs = tuple(_fp32(a) for a in rest), {k: _fp32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device.type, enabled=False):
            q, k, v = (p.float() + lora.lora_output(x.float()) for p, (x, _, _, lora) in zip(base, inputs))
            eye3, eye = _identity(attention.embed_dim, device)
            # identity projections: the original forward now does only the attention itself (multiplying by I is exact)
            with _shadowed(attention, in_proj_weight=eye3, in_proj_bias=None), \
                    _shadowed(attention.out_proj, weight=eye, bias=None):
                attended, weights = call_original(q, k, v, *rest, **kwargs)
        out_proj = attention.out_proj
        base_out = F.linear(attended if autocast else attended.to(out_proj.weight.dtype), out_proj.weight,
                            out_proj.bias)
        with torch.autocast(device_type=device.type, enabled=False):
            out = base_out.float() + self.out.lora_output(attended)
        return out.to(result_dtype), (weights.to(result_dtype) if weights is not None else None)


_IDENTITIES: dict = {}


def _identity(d: int, device) -> tuple:
    """fp32 ([I; I; I], I) of size d, one pair per device: every layer's autograd graph references the same tensors
    instead of saving its own copies."""
    key = (d, str(device))
    if key not in _IDENTITIES:
        eye = torch.eye(d, dtype=torch.float32, device=device)
        _IDENTITIES[key] = (torch.cat([eye, eye, eye]), eye)
    return _IDENTITIES[key]


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
