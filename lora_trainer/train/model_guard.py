"""The restore contract: after training — success, cancel, NaN, OOM or any exception — the model the webui lent
us is exactly as before.

`ModelGuard(model).snapshot()` records, for every module: training flag, the `__dict__` keys (so attributes the
trainer or the LoRA network added are removed), an instance-level `forward` override, every hook dict, and the
`_parameters` / `_buffers` / `_modules` mappings (so replaced or added children come back); for every parameter
and buffer: dtype, device, requires_grad, its `.grad` and its in-place version counter. `restore()` puts all of
that back. Weights are never copied (an SDXL model is ~7 GB): the trainer never writes base weights, and the
version counters prove it — `restore()` returns the names of tensors modified in place (expected: none), so a bug
is reported instead of silently leaving a damaged model. Global RNG states (CPU, CUDA) are restored too, so
training does not shift the webui's seeds. Tokenizers and embedding-table sizes: train/tokenizer_guard.py.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class _TensorState:
    tensor: torch.Tensor
    dtype: torch.dtype
    device: torch.device
    requires_grad: bool
    grad: Optional[torch.Tensor]
    version: int


@dataclass
class _ModuleState:
    training: bool
    keys: frozenset
    forward: object
    hook_dicts: Dict[str, dict]
    parameters: dict
    buffers: dict
    modules: dict


_MISSING = object()


@dataclass
class ModelGuard:
    model: nn.Module
    _modules: Dict[int, tuple] = field(default_factory=dict)
    _tensors: Dict[str, _TensorState] = field(default_factory=dict)
    _rng: tuple = ()
    _tokenizers: object = None

    def snapshot(self) -> ModelGuard:
        for module in self.model.modules():
            self._modules[id(module)] = (module, _ModuleState(
                training=module.training,
                keys=frozenset(module.__dict__),
                forward=module.__dict__.get("forward", _MISSING),
                hook_dicts={k: dict(v) for k, v in module.__dict__.items() if "hooks" in k and isinstance(v, dict)},
                parameters=dict(module._parameters), buffers=dict(module._buffers), modules=dict(module._modules)))
        for name, t in _named_tensors(self.model):
            # inference-mode tensors (Forge makes some at generation time) have no version counter
            version = -1 if t.is_inference() else t._version
            self._tensors[name] = _TensorState(t, t.dtype, t.device, t.requires_grad, t.grad, version)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self._rng = (torch.get_rng_state(), cuda, random.getstate())
        from .tokenizer_guard import TokenizerGuard

        self._tokenizers = TokenizerGuard(self.model)  # tokenizers and embedding-table sizes (not tensors)
        return self

    def restore(self) -> List[str]:
        """Put everything back; return the names of tensors whose values changed in place (should be empty)."""
        for module, state in self._modules.values():
            _restore_dict(module._parameters, state.parameters)
            _restore_dict(module._buffers, state.buffers)
            _restore_dict(module._modules, state.modules)
            for key in [k for k in module.__dict__ if k not in state.keys]:
                del module.__dict__[key]
            if state.forward is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = state.forward
            for key, hooks in state.hook_dicts.items():
                current = module.__dict__.get(key)
                if isinstance(current, dict):
                    _restore_dict(current, hooks)  # in place: RemovableHandles point at these dicts
                else:
                    module.__dict__[key] = type(hooks)(hooks)
            module.training = state.training
        changed = []
        for name, s in self._tensors.items():
            t = s.tensor
            if t.dtype != s.dtype or t.device != s.device:
                t.data = t.data.to(device=s.device, dtype=s.dtype)
            if t.requires_grad != s.requires_grad:
                t.requires_grad_(s.requires_grad)
            t.grad = s.grad
            if s.version >= 0 and t._version != s.version and t.dtype == s.dtype:
                changed.append(name)
        cpu, cuda, py = self._rng
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        if self._tokenizers is not None:
            changed.extend(self._tokenizers.restore())
        if changed:
            logger.error("base weights were modified in place during training (a bug): %s", ", ".join(changed[:10]))
        return changed


def _named_tensors(model: nn.Module):
    seen = set()
    for prefix, module in model.named_modules():
        for kind in (module._parameters, module._buffers):
            for name, t in kind.items():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield (f"{prefix}.{name}" if prefix else name), t


def _restore_dict(current: dict, saved: dict) -> None:
    if current.keys() != saved.keys() or any(current[k] is not saved[k] for k in saved):
        current.clear()
        current.update(saved)
