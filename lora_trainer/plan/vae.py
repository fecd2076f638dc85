"""Peak memory of encoding a batch of images with the VAE (when latents are not cached), traced on meta."""

from __future__ import annotations

import torch

from .sim import LiveBytes

_CACHE: dict = {}


def vae_encode_peak(shim, cache_key, batch: int, height: int, width: int) -> int:
    key = (cache_key, batch, height, width)
    if key not in _CACHE:
        vae = shim.first_stage_model
        if vae is None:
            return 0
        dtype = next(vae.parameters()).dtype
        live = LiveBytes(resident=[vae])
        with live, torch.no_grad():
            images = torch.empty(batch, 3, height, width, dtype=dtype, device="meta")
            out = vae.encode(images)
            if hasattr(out, "sample"):
                out.sample()
        _CACHE[key] = live.peak
    return _CACHE[key]
