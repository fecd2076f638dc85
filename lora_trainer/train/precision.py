"""Mixed precision (kohya-lora-format.md §5.9, webui-integration.md §3.8).

The LoRA parameters and the optimizer stay fp32; the frozen model keeps its own dtype (the webui's default is
fp16 UNet/text encoders) and runs under torch.autocast. fp16 needs a GradScaler; bf16 does not. CPU: `auto` is
fp32, fp16 is not supported there (falls back to fp32), bf16 works.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import TrainError

_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Precision:
    name: str  # what actually runs: "fp32", "fp16" or "bf16"
    device_type: str
    note: str = ""  # why it differs from what was asked, for the log

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return _HALF.get(self.name)

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self):
        """A GradScaler for fp16 on CUDA (fp16 gradients underflow without it), else None."""
        if self.name == "fp16" and self.device_type == "cuda":
            if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
                return torch.amp.GradScaler("cuda")
            return torch.cuda.amp.GradScaler()  # the webui 1.10's torch 2.1
        return None


def _bf16_ok(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device_type == "cpu"


def resolve_precision(requested: str, device: torch.device, model_dtype: torch.dtype) -> Precision:
    """What to run, given the config's `mixed_precision`, the training device and the UNet weights' dtype."""
    device_type = torch.device(device).type
    if device_type == "cpu":
        if requested == "fp16":
            return Precision("fp32", "cpu", "fp16 is not supported on the CPU; training in fp32")
        if model_dtype == torch.float16:
            # CPU autocast cannot mix fp16 weights into its fp32 ops (layer_norm fails); the webui runs CPU in fp32.
            raise TrainError("mixed_precision: the model is fp16 on the CPU, which cannot be trained; start the webui "
                             "with --no-half (the CPU needs fp32 weights)")
        return Precision("bf16" if requested == "bf16" else "fp32", "cpu")
    if requested == "auto":
        if model_dtype == torch.float16:
            return Precision("fp16", device_type)  # what the webui runs it in, and what the LoRA will meet
        return Precision("bf16" if _bf16_ok(device_type) else "fp16", device_type)
    if requested == "fp32" and model_dtype in (torch.float16, torch.bfloat16):
        name = "bf16" if model_dtype == torch.bfloat16 else "fp16"
        return Precision(name, device_type, f"the model's weights are {name} (start the webui with --no-half for "
                                            f"fp32); training under {name} autocast")
    if requested == "bf16" and not _bf16_ok(device_type):
        return Precision("fp16", device_type, "this GPU has no bf16; training in fp16")
    return Precision(requested, device_type)
