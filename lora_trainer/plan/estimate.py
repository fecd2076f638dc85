"""plan_for_model (the loaded model) and plan_for_arch (an architecture, built on meta): the peak device memory of
one training step for a TrainConfig, broken down (report.MemoryPlan)."""

from __future__ import annotations

import torch

from .calibration import overhead_bytes
from .device import device_label, free_bytes
from .optimizer_state import optimizer_state_bytes, step_workspace_bytes
from .report import MemoryPlan, PlanItem
from .suggestions import add_suggestions
from .trace import StepShape, trace_step
from .vae import vae_encode_peak

_SHIMS: dict = {}  # cache key -> meta copy (one or two models: the tab re-plans the same one)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def _bytes(module) -> int:
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _shim(key, build):
    if key not in _SHIMS:
        if len(_SHIMS) >= 2:
            _SHIMS.clear()
        _SHIMS[key] = build()
    return _SHIMS[key]


def plan_for_model(model, config, device=None, free: int | None = None, height: int = 0, width: int = 0,
                   suggest: bool = True) -> MemoryPlan:
    """The plan for training `model` (the webui's loaded model) as `config` says, on `device` (default: where the
    session would train). `free` overrides the device's free memory now."""
    from ..arch.adapters import get_adapter
    from ..train.errors import TrainError
    from ..train.precision import resolve_precision
    from .meta import meta_copy_of_model

    adapter = get_adapter(model)
    arch = adapter.arch
    if device is None:
        device = "cuda" if adapter.lowvram and torch.cuda.is_available() else adapter.unet_device
    device = torch.device(device)
    notes = []
    try:
        precision = resolve_precision(config.mixed_precision, device, adapter.unet_dtype).name
    except TrainError as exc:
        notes.append(str(exc))
        precision = "fp32"
    resident, moved = 0, 0
    needed_parts = [adapter.unet] + ([] if config.cache_text_encoder_outputs and not config.train_text_encoder
                                     else adapter.text_encoder_modules()) + ([] if config.cache_latents else
                                                                             [adapter.vae])
    for part in [adapter.unet] + adapter.text_encoder_modules() + [adapter.vae]:
        on_device = next(part.parameters()).device.type == device.type
        if on_device:
            resident += _bytes(part)
        elif any(part is p for p in needed_parts):
            moved += _bytes(part)
    key = ("model", id(adapter.unet), adapter.unet_dtype, sum(p.numel() for p in adapter.unet.parameters()))
    shim = _shim(key, lambda: meta_copy_of_model(model, arch, with_text=True))
    base = [PlanItem("base_weights", "model weights on the device (the webui's)", resident, counted=False)]
    if moved:
        base.append(PlanItem("weights_moved_in", "model weights moved onto the device (--medvram)", moved))
    return _plan(shim, arch, key, config, device, precision, base, free_bytes(device) if free is None else free,
                 height, width, notes, suggest)


def plan_for_arch(arch: str, config, weight_dtype: str = "fp16", device: str = "cuda", free: int | None = None,
                  height: int = 0, width: int = 0, suggest: bool = True) -> MemoryPlan:
    """The plan for an architecture ("sd1", "sd2", "sd2v", "sdxl") with checkpoint weights in `weight_dtype`,
    nothing loaded yet: the model's weights are counted too."""
    from ..train.precision import resolve_precision
    from .meta import meta_model

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[weight_dtype]
    key = ("arch", arch, weight_dtype)
    shim = _shim(key, lambda: meta_model(arch, dtype))
    device = torch.device(device)
    notes = []
    if device.type == "cuda":  # as on a GPU with bf16 (this machine may have none)
        wanted = config.mixed_precision
        precision = "bf16" if wanted == "bf16" or (wanted == "auto" and dtype != torch.float16) else \
            resolve_precision(wanted, device, dtype).name
    else:
        precision = "bf16" if config.mixed_precision == "bf16" else "fp32"
    weights = _bytes(shim.model.diffusion_model) + _bytes(shim.first_stage_model) + sum(
        _bytes(e) for e in (shim.conditioner.embedders if arch == "sdxl" else [shim.cond_stage_model]))
    base = [PlanItem("base_weights", f"model weights ({weight_dtype}, loaded by the webui)", weights)]
    if free is None and device.type == "cpu":
        free = free_bytes(device)
    return _plan(shim, arch, key, config, device, precision, base, free, height, width, notes, suggest)


def step_shape(config, arch: str, device_type: str, precision: str, height: int = 0, width: int = 0) -> StepShape:
    from ..arch.adapters.base import NATIVE_RESOLUTION

    res = config.resolution or NATIVE_RESOLUTION[arch]
    return StepShape(batch=config.train_batch_size, height=height or res, width=width or res,
                     rank=config.network_dim, alpha=config.network_alpha, conv_rank=config.conv_dim,
                     conv_alpha=config.conv_alpha, train_unet=config.train_unet,
                     train_text_encoder=config.train_text_encoder, checkpointing=config.gradient_checkpointing,
                     device_type=device_type, autocast=precision)


def _plan(shim, arch, key, config, device, precision, base, free, height, width, notes, suggest) -> MemoryPlan:
    shape = step_shape(config, arch, device.type, precision, height, width)
    trace = trace_step(shim, arch, shape, cache_key=key)
    opt_state = optimizer_state_bytes(config.optimizer, trace.lora_shapes, config.optimizer_args)
    overhead = overhead_bytes(device.type, trace.peak, trace.largest_weight)
    step_peak = trace.peak + overhead
    opt_step = trace.grads + step_workspace_bytes(config.optimizer, trace.lora_shapes, device.type)
    vae_peak = 0 if config.cache_latents and not config.random_crop else vae_encode_peak(
        shim, (key, "vae"), shape.batch, shape.height, shape.width)
    items = list(base) + [
        PlanItem("lora_params", "LoRA parameters (fp32)", trace.lora_bytes),
        PlanItem("optimizer_state", f"optimizer state ({config.optimizer})", opt_state),
        PlanItem("gradients", "LoRA gradients (fp32)", trace.grads),
        PlanItem("activations", "activations saved for backward" + (" (incl. text encoder)" if
                                                                      shape.train_text_encoder else ""), trace.saved),
        PlanItem("backward_temporaries", "backward working set (recomputation, grads in flight)",
                 max(0, trace.peak - trace.saved - trace.grads)),
        PlanItem("workspace", f"allocator / kernel workspace ({device.type} calibration)", overhead),
    ]
    if opt_step > step_peak:
        items.append(PlanItem("optimizer_step", "optimizer step temporaries beyond the step", opt_step - step_peak))
    if vae_peak > step_peak:
        items.append(PlanItem("vae_encode", "VAE encoding (latents not cached) beyond the step", vae_peak - step_peak))
    plan = MemoryPlan(arch=arch, device=str(device), device_label=device_label(device),
                      resolution=(shape.height, shape.width), batch=shape.batch, items=items, free=free, notes=notes)
    plan.notes.append(f"attention: {'SDPA (fused)' if device.type == 'cuda' else 'as the model has it'}; "
                      f"precision {precision}; traced in {trace.seconds:.1f} s")
    if suggest and plan.fits is False:
        add_suggestions(plan, lambda cfg: _plan(shim, arch, key, cfg, device, precision, base, free, height, width,
                                                [], False).needed, config)
    return plan
