"""What the meta-device trace cannot see: the allocator's rounding and caching, kernel workspaces (cuBLAS, cuDNN
convolution algorithms, the CPU's oneDNN weight reorders), fragmentation. The plan adds `scale − 1` of the traced
step peak, `weight` × the largest weight tensor of the UNet, and `fixed` bytes.

CPU: fitted to torch.profiler(profile_memory=True) peaks of real steps (tests/test_plan_measured.py,
bench/plan_vs_measured.py). CUDA: provisional until `bench/gpu_check.sh` has run on a GPU — update from its
"measured / plan" column (RESULTS.md says how).
"""

from __future__ import annotations

MiB = 2**20

CALIBRATION = {
    # CPU: the trace alone is the profiler's peak within 1 % on full-size SD1.5 at 256² and tiny models at 256²
    # (bench/RESULTS.md); at 128² (16×16 latents) the real step holds 50-90 MB more, unexplained (see there)
    "cpu": {"scale": 1.0, "weight": 0.0, "fixed": 0},
    # provisional: cuBLAS/cuDNN workspaces, 512 B / 2 MiB block rounding — update from bench/gpu_check.sh
    "cuda": {"scale": 1.10, "weight": 0.0, "fixed": 192 * MiB},
}


def overhead_bytes(device_type: str, traced_peak: int, largest_weight: int = 0) -> int:
    c = CALIBRATION.get(device_type, CALIBRATION["cuda"])
    return int(traced_peak * (c["scale"] - 1.0)) + int(c["weight"] * largest_weight) + int(c["fixed"])
