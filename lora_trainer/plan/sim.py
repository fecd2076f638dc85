"""Running a training step on the `meta` device and counting its memory, without allocating any.

- `LiveBytes` (a TorchDispatchMode) sees every tensor every aten op creates, keeps a weak reference to its storage
  and so knows the bytes alive at each moment: the peak of the step (activations, temporaries, gradients).
- `SavedBytes` (saved-tensor hooks) counts what autograd keeps for backward, deduplicated by storage.
- `SimulatedAutocast` (a TorchFunctionMode, above autograd) casts inputs the way CUDA/CPU autocast does, since
  autocast kernels never run for meta tensors; it keeps its state in the real (CPU) autocast flag, which
  torch.utils.checkpoint saves and restores around its recomputation. It also stands in a flash-style SDPA
  (saves q, k, v, out and the row log-sum-exp) for the meta device's math fallback, which would materialise
  the scores.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

_LOWER = {F.linear, F.conv1d, F.conv2d, F.conv3d, torch.matmul, torch.bmm, torch.mm, torch.addmm, torch.baddbmm,
          torch.einsum, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.bmm, torch.Tensor.mm}
_FLOAT32 = {F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax, F.mse_loss,
            F.huber_loss, torch.nn.functional.log_softmax}


class LiveBytes(TorchDispatchMode):
    """`resident`: modules whose parameters and buffers exist already — views of them (a weight's `.t()`) share
    their storage and allocate nothing."""

    def __init__(self, resident=()):
        super().__init__()
        self.live = self.peak = 0
        self.forward_peak = 0  # set by end_forward(): the backward's own peak is then `backward_peak`
        self.backward_peak = 0
        self._seen = weakref.WeakKeyDictionary()
        for module in resident:
            for t in list(module.parameters()) + list(module.buffers()):
                self._seen[t.untyped_storage()] = 0

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage in self._seen:
            return
        n = storage.nbytes()
        self._seen[storage] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, n)

    def _release(self, n: int) -> None:
        self.live -= n

    def end_forward(self) -> None:
        self.forward_peak, self.peak = self.peak, self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            return False if args[0].dtype == torch.bool else 0  # .item() of a mask / fill value: no data on meta
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


class SavedBytes:
    """Bytes autograd saves for backward; parameters, buffers and views of them (`weight.t()`) are resident."""

    def __init__(self, resident=()):
        self.total = 0
        self._seen = weakref.WeakKeyDictionary()
        for module in resident:
            for t in list(module.parameters()) + list(module.buffers()):
                self._seen[t.untyped_storage()] = True

    def pack(self, t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            if storage not in self._seen:
                self._seen[storage] = True
                self.total += storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _cast(value, dtype):
    return tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, value)


def backward(loss: torch.Tensor) -> None:
    """loss.backward() without passing through __torch_function__ (whose handler would run the whole backward,
    checkpoint recomputation included, with the simulation switched off)."""
    from torch.autograd.variable import Variable

    Variable._execution_engine.run_backward((loss,), (torch.ones_like(loss),), False, False, (),
                                            allow_unreachable=True, accumulate_grad=True)


class SimulatedAutocast(TorchFunctionMode):
    def __init__(self, device_type: str, dtype: torch.dtype | None, flash_attention: bool):
        super().__init__()
        self.device_type, self.dtype, self.flash = device_type, dtype, flash_attention

    def __enter__(self):
        if self.dtype is not None:
            self._previous = (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))
            torch.set_autocast_enabled(self.device_type, True)  # a flag only: no kernel runs on meta
            torch.set_autocast_dtype(self.device_type, self.dtype)
        return super().__enter__()

    def __exit__(self, *exc):
        if self.dtype is not None:
            torch.set_autocast_enabled(self.device_type, self._previous[0])
            torch.set_autocast_dtype(self.device_type, self._previous[1])
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        active = self.dtype is not None and torch.is_autocast_enabled(self.device_type)
        if func is F.scaled_dot_product_attention and self.flash and kwargs.get("attn_mask") is None \
                and len(args) == 3:
            q, k, v = _cast(args, self.dtype) if active else args
            return _FlashAttention.apply(q, k, v)
        if active and func in _LOWER:
            args, kwargs = _cast(args, self.dtype), _cast(kwargs, self.dtype)
        elif active and func in _FLOAT32:
            args, kwargs = _cast(args, torch.float32), _cast(kwargs, torch.float32)
        return func(*args, **kwargs)
