"""Data-parallel training over N processes (`accelerate launch --num_processes N -m lora_trainer train ...`).

Only the LoRA parameters are synchronised: after each rank's backward passes their gradients are summed with one
all-reduce, so every rank takes the same optimizer step and holds the same weights (no DDP wrapper around the
frozen base model). The loop runs with the *global* gradient accumulation (N x the configured count): every
optimizer step's group of bucket-pure micro-batches is exactly what one process with N x accumulation would use,
and rank r trains micro-batches r, r+N, ... of it with the same per-micro-batch seeds. Dividing each loss by the
global count and summing over ranks gives the gradient one process would have accumulated. Rank 0 alone writes
files, previews and logs (loop._save asks `is_main`).

The webui tab and a plain `python -m lora_trainer` run use `LocalProcess`: nothing changes for them.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import torch


class LocalProcess:
    """One process: every micro-batch is ours, nothing to synchronise."""

    rank, world_size, is_main = 0, 1, True

    def share(self, group: Sequence) -> List[Tuple[int, object]]:
        return list(enumerate(group))

    def sync(self, params: Sequence[torch.Tensor], losses: List[float]) -> List[float]:
        return losses

    def barrier(self) -> None:
        pass


class DataParallel(LocalProcess):
    """torch.distributed process group already initialised (by accelerate or torchrun)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0

    def share(self, group: Sequence) -> List[Tuple[int, object]]:
        return [(micro, items) for micro, items in enumerate(group) if micro % self.world_size == self.rank]

    def sync(self, params: Sequence[torch.Tensor], losses: List[float]) -> List[float]:
        import torch.distributed as dist

        params = list(params)
        device = params[0].device
        # a rank may have had no micro-batch in a short last group: a parameter keeps grad None only if it has
        # none on every rank (as in one process, where the optimizer then skips it)
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        stats = torch.tensor([float(sum(losses)), float(len(losses))], dtype=torch.float64, device=device)
        dist.all_reduce(has)
        dist.all_reduce(stats)
        live = [p for p, flag in zip(params, has.tolist()) if flag]
        if live:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in live]
            flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for p in live:
                n = p.numel()
                p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
                offset += n
        total, count = stats.tolist()
        return [total / count] if count else losses

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def launched_world_size() -> int:
    """>1 when started by `accelerate launch` / torchrun with several processes."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def start(cpu: bool = False):
    """(strategy, device) for this process. Several processes: the process group is initialised through
    accelerate when it is installed (it picks NCCL/gloo and the rank's GPU), else torch.distributed's env://."""
    world = launched_world_size()
    if world <= 1:
        return LocalProcess(), None
    try:
        from accelerate import PartialState
    except ImportError:
        PartialState = None
    if PartialState is not None:
        state = PartialState(cpu=cpu)
        return DataParallel(state.process_index, state.num_processes), state.device
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and not cpu
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return DataParallel(dist.get_rank(), dist.get_world_size()), torch.device(f"cuda:{local}" if use_cuda else "cpu")


def finish(strategy) -> None:
    if isinstance(strategy, DataParallel):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
