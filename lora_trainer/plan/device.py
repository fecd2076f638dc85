"""The free memory of the training device now: the GPU's (what CUDA reports free plus what torch's caching
allocator holds unused), or on the CPU the RAM the kernel reports available."""

from __future__ import annotations

import torch


def free_bytes(device) -> int | None:
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    if device.type == "cpu":
        return _mem_available()
    return None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_label(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"GPU memory ({torch.cuda.get_device_name(device)})"
    if device.type == "cuda":
        return "GPU memory"
    return "RAM (training on the CPU: device memory is system memory)"
