"""What the meta-device trace cannot see: the allocator's rounding and caching, kernel workspaces (cuBLAS, cuDNN
convolution algorithms), fragmentation. The plan adds `scale − 1` of the traced step peak plus `fixed` bytes.

CPU: fitted to torch.profiler(profile_memory=True) peaks of real steps (tests/test_plan_measured.py,
bench/plan_vs_measured.py). CUDA: provisional until `bench/gpu_check.sh` has run on a GPU — update from its
"measured / plan" column (RESULTS.md says how).
"""

from __future__ import annotations

MiB = 2**20

CALIBRATION = {
    "cpu": {"scale": 1.0, "fixed": 0},
    "cuda": {"scale": 1.10, "fixed": 192 * MiB},  # provisional: cuBLAS/cuDNN workspaces, 2 MiB block rounding
}


def overhead_bytes(device_type: str, traced_peak: int) -> int:
    c = CALIBRATION.get(device_type, CALIBRATION["cuda"])
    return int(traced_peak * (c["scale"] - 1.0)) + int(c["fixed"])
