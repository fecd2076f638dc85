"""Tiny Stable Diffusion models with random weights, built offline from the real classes the webui loads.

Used by the tests, the `demo` command and the benchmarks. See docs/TINY_MODELS.md for the configs.
"""

from __future__ import annotations

TINY_ARCHS = ("sd1", "sd2", "sd2v", "sdxl")


def build_tiny_model(arch: str, seed: int = 0, webui_flags: bool = False, full_size: bool = False):
    """Build a tiny model of `arch` ("sd1", "sd2", "sd2v" or "sdxl") on the CPU, in eval mode, fp32.

    webui_flags=True also sets the attributes the webui adds after loading (`is_sd1`, `is_sd2`, `is_sdxl`).
    full_size=True builds the real architecture sizes instead (random weights; for benchmarks, GBs of memory).
    """
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    from .torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # before ldm/open_clip import it
    if arch == "sdxl":
        from .tiny_sdxl import SDXL_FULL, build_tiny_sdxl

        model = build_tiny_sdxl(seed=seed, cfg=SDXL_FULL if full_size else None)
    else:
        from .tiny_sd import build_tiny_sd

        model = build_tiny_sd(v2=arch != "sd1", v_prediction=arch == "sd2v", seed=seed, full=full_size)
    if webui_flags:
        model.is_sd1, model.is_sd2, model.is_sdxl = arch == "sd1", arch in ("sd2", "sd2v"), arch == "sdxl"
    return model
