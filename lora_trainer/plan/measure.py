"""Measuring one real training step's peak memory, to check and calibrate the plan: the project's own LoRA network,
checkpointing, fused attention (CUDA), optimizer and precision on the real model, the step as the loop runs it.

CPU: torch.profiler(profile_memory=True) — every allocation and free of the step, summed in time order. CUDA:
torch.cuda.max_memory_allocated. Either way the result is the peak beyond what was allocated before the step,
plus the LoRA parameters and optimizer state that exist before it (what the plan's `needed` counts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Measured:
    peak: int  # bytes beyond the base model: persistent (LoRA + optimizer state) + the step's own peak
    persistent: int
    step_peak: int
    seconds: float


def profiler_peak(prof) -> int:
    """Peak of the running sum of the profiler's allocation events (bytes above the level when it started)."""
    from torch._C._profiler import _EventType

    allocs, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.typed[0] == _EventType.Allocation:
            allocs.append((event.start_time_ns, event.typed[1].alloc_size))
        stack.extend(event.children)
    live = peak = 0
    for _, size in sorted(allocs):
        live += size
        peak = max(peak, live)
    return peak


def measure_step(model, config, device="cpu", steps: int = 2) -> Measured:
    """Run `steps` training steps on random latents (the first creates the optimizer state) and measure the last."""
    from ..arch.adapters import SizeConditioning, get_adapter
    from ..lora_net import LoRANetwork
    from ..train.attention import FusedAttention
    from ..train.checkpointing import GradientCheckpointing
    from ..train.optimizers import build_optimizer
    from ..train.precision import resolve_precision
    from .estimate import step_shape

    c = config
    device = torch.device(device)
    adapter = get_adapter(model)
    precision = resolve_precision(c.mixed_precision, device, adapter.unet_dtype)
    shape = step_shape(c, adapter.arch, device.type, precision.name)
    model.requires_grad_(False)
    network = LoRANetwork.create(model, arch=adapter.arch, rank=c.network_dim, alpha=c.network_alpha,
                                 conv_rank=c.conv_dim, conv_alpha=c.conv_alpha, train_unet=c.train_unet,
                                 train_text_encoder=c.train_text_encoder).to(device)
    network.train()
    groups = network.param_groups(c.unet_lr, c.text_encoder_lr)
    optimizer, _ = build_optimizer(c.optimizer, groups, c.optimizer_args)
    scaler = precision.grad_scaler()
    checkpointing, attention = GradientCheckpointing(adapter.unet), FusedAttention(adapter.unet)
    b, h, w = shape.batch, shape.height // 8, shape.width // 8
    captions = ["a photo of a cat"] * b
    sizes = SizeConditioning(*(torch.tensor([[shape.height, shape.width]] * b, dtype=torch.float32),) * 3)
    try:
        network.attach()
        if c.gradient_checkpointing:
            checkpointing.enable()
        if device.type == "cuda":
            attention.enable()
        fixed_text = None
        if not c.train_text_encoder:
            with torch.no_grad(), precision.autocast():
                fixed_text = adapter.encode_text(captions).to(device)  # --medvram: encoded where the TE is
        latents = torch.randn(b, 4, h, w, device=device)

        def step():
            with precision.autocast():
                text = fixed_text if fixed_text is not None else adapter.encode_text(captions)
                noise = torch.randn_like(latents)
                pred = adapter.predict(latents * 0.5 + noise * 0.5, torch.full((b,), 500, device=device), text,
                                       sizes if adapter.uses_size_conditioning else None)
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            del pred, loss
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(steps - 1):
            step()
        persistent = _tensor_bytes(network.parameters()) + _tensor_bytes(
            t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))
        started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            step_peak = torch.cuda.max_memory_allocated() - before
        else:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
            step_peak = profiler_peak(prof)
        seconds = time.perf_counter() - started
    finally:
        attention.remove()
        checkpointing.remove()
        network.detach()
        optimizer.state.clear()
    return Measured(persistent + step_peak, persistent, step_peak, seconds)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
