"""One training step (text encoder when trained → UNet → loss → backward) on a meta copy of the model, with the
project's own LoRA network, gradient checkpointing and fused attention attached, counted by `sim`.

Costs no device memory and follows whatever module tree the checkpoint has. Results are cached per model and
shape, so the tab can re-plan on every settings change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .sim import LiveBytes, SavedBytes, SimulatedAutocast, backward


@dataclass(frozen=True)
class StepShape:
    batch: int
    height: int  # pixels
    width: int
    rank: int = 16
    alpha: float = 8.0
    conv_rank: int = 0
    conv_alpha: float = 1.0
    train_unet: bool = True
    train_text_encoder: bool = False
    checkpointing: bool = True
    device_type: str = "cuda"  # where the step will run: decides the attention kernel (SDPA on CUDA)
    autocast: str = "fp16"  # "fp16", "bf16" or "fp32" (no autocast)


@dataclass
class StepTrace:
    peak: int  # bytes alive at the step's worst moment beyond what existed before it (incl. LoRA gradients)
    saved: int  # of which autograd kept for backward during the forward (activations)
    grads: int  # LoRA gradient bytes (fp32)
    lora_shapes: list = field(default_factory=list)  # [(shape, is_lora_up)] of the trained LoRA parameters
    seconds: float = 0.0
    forward_peak: int = 0
    backward_peak: int = 0
    largest_weight: int = 0  # bytes of the UNet's largest weight tensor (CPU kernels reorder weights)

    @property
    def lora_bytes(self) -> int:
        return sum(_numel(s) * 4 for s, _ in self.lora_shapes)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
_CACHE: dict = {}


def trace_step(shim, arch: str, shape: StepShape, cache_key=None) -> StepTrace:
    key = (cache_key, arch, shape)
    if cache_key is not None and key in _CACHE:
        return _CACHE[key]
    result = _trace(shim, arch, shape)
    if cache_key is not None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = result
    return result


def _trace(shim, arch: str, s: StepShape) -> StepTrace:
    from ..arch.adapters import get_adapter
    from ..lora_net import LoRANetwork
    from ..train.attention import FusedAttention
    from ..train.checkpointing import GradientCheckpointing

    started = time.perf_counter()
    adapter = get_adapter(shim, arch)
    unet = adapter.unet
    for module in [unet] + adapter.text_encoder_modules():
        module.requires_grad_(False)
    network = LoRANetwork.create(shim, arch=arch, rank=s.rank, alpha=s.alpha, conv_rank=s.conv_rank,
                                 conv_alpha=s.conv_alpha, train_unet=s.train_unet,
                                 train_text_encoder=s.train_text_encoder)
    network.train()
    checkpointing = GradientCheckpointing(unet)
    attention = FusedAttention(unet)
    resident = [unet, network] + adapter.text_encoder_modules()
    saved, live = SavedBytes(resident), LiveBytes(resident)
    try:
        network.attach()
        if s.checkpointing:
            checkpointing.enable()
        if s.device_type == "cuda":
            attention.enable()  # what the session does on CUDA
        dtype = _DTYPES[s.autocast]
        # the CPU autocast flag carries the simulated state (checkpointing restores it when recomputing)
        with live, saved.hooks(), SimulatedAutocast("cpu", dtype, flash_attention=True):
            _step(adapter, unet, arch, s, live)
        grads = sum(p.grad.numel() * p.grad.element_size() for p in network.parameters() if p.grad is not None)
        shapes = [(tuple(p.shape), "lora_up" in name) for name, p in network.named_parameters() if p.requires_grad]
    finally:
        attention.remove()
        checkpointing.remove()
        network.detach()
    return StepTrace(live.peak, saved.total, grads, shapes, time.perf_counter() - started, live.forward_peak,
                     live.backward_peak, max((p.numel() * p.element_size() for p in unet.parameters()), default=0))


def _step(adapter, unet, arch: str, s: StepShape, live: LiveBytes) -> None:
    b, h, w = s.batch, s.height // 8, s.width // 8
    meta = dict(device="meta")
    if s.train_text_encoder:
        text = adapter.encode_text(["a photo of a cat"] * b)
        context, pooled = text.context, text.pooled
    else:  # cached or computed under no_grad: only the outputs are alive
        context = torch.empty(b, 77, _context_dim(unet), **meta)
        pooled = torch.empty(b, 1280, **meta) if arch == "sdxl" else None
    latents = torch.empty(b, 4, h, w, **meta)
    noise = torch.empty_like(latents)
    timesteps = torch.zeros(b, dtype=torch.long, **meta)
    noisy = latents * 0.5 + noise * 0.5
    if arch == "sdxl":
        sizes = torch.empty(b, unet.label_emb[0][0].in_features - pooled.shape[1], **meta)
        pred = unet(noisy, timesteps=timesteps, context=context, y=torch.cat([pooled.to(sizes.dtype), sizes], 1))
    else:
        pred = unet(noisy, timesteps=timesteps, context=context)
    loss = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)).mean()
    live.end_forward()
    backward(loss)
    live.backward_peak = live.peak
    live.peak = max(live.peak, live.forward_peak)


def _context_dim(unet) -> int:
    for module in unet.modules():
        attn2 = getattr(module, "attn2", None)
        if attn2 is not None:
            return attn2.to_k.in_features
    raise ValueError("the UNet has no cross-attention layer")
