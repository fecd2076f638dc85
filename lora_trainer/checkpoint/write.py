"""Write a model object as a single-file checkpoint in the webui's key layout (`model.state_dict()`: what the
webui's `load_state_dict` reads back). For tests and benchmarks: tiny models become checkpoint files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


def save_checkpoint(model: torch.nn.Module, path, dtype: Optional[torch.dtype] = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()  # shared storage (tied weights) cannot be saved as-is
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return path
