"""A full, comparable description of a model's state, to *prove* the restore contract (tests, debugging).

Unlike ModelGuard (cheap: no weight copies), this hashes every tensor's bytes, so it costs a pass over the
weights: fine for tiny models and for a one-off check, not for every training run.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def _tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:
        data = data.view(torch.int16)
    return hashlib.sha1(data.numpy().tobytes()).hexdigest()


def model_state(model: nn.Module) -> dict:
    """{"tensors": {name: (dtype, device, requires_grad, has_grad, sha1)}, "modules": {name: (...)},
    "tokenizers": {name: (class, size, added tokens)}}: equal dicts mean equal weights (and table sizes), dtypes,
    devices, requires_grad, grads, training flags, attributes, instance forwards, hooks, children and vocabularies."""
    tensors = {}
    for prefix, module in model.named_modules():
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(module, kind).items():
                if t is not None:
                    key = f"{prefix}.{name}" if prefix else name
                    tensors[key] = (str(t.dtype), str(t.device), bool(t.requires_grad), t.grad is not None,
                                    _tensor_digest(t))
    modules = {}
    for name, module in model.named_modules():
        hooks = {k: len(v) for k, v in module.__dict__.items() if "hooks" in k and isinstance(v, dict)}
        modules[name] = (type(module).__name__, module.training, tuple(sorted(module.__dict__)),
                         "forward" in module.__dict__, tuple(sorted(hooks.items())), tuple(module._modules),
                         id(module))
    from .tokenizer_guard import find_tokenizers, tokenizer_size

    tokenizers = {name: (type(tok).__name__, tokenizer_size(tok), repr(sorted(map(str, _added_vocab(tok)))))
                  for name, tok in find_tokenizers(model).items()}
    return {"tensors": tensors, "modules": modules, "tokenizers": tokenizers}


def _added_vocab(tok) -> list:
    get = getattr(tok, "get_added_vocab", None)
    return list(get()) if get is not None else list(getattr(tok, "encoder", {}))[-64:]


def state_differences(before: dict, after: dict, limit: int = 10) -> list:
    """Human-readable differences between two model_state() results (empty list = identical)."""
    out = []
    for section in ("tensors", "modules", "tokenizers"):
        a, b = before.get(section, {}), after.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section} {key}: {a.get(key)} -> {b.get(key)}")
                if len(out) >= limit:
                    return out
    return out
