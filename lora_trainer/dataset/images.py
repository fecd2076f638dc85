"""Pixels: decode one ImageItem into the bucket-sized tensor the VAE eats (reference §4.3, §4.5).

Differences from kohya, on purpose: EXIF orientation is applied (kohya trains phone photos sideways),
transparency is composited onto white (kohya's convert("RGB") turns it black), 16-bit images are scaled
down instead of clipped, and the crop region is resampled straight from the source (PIL's `box`), which equals
"resize, then crop" without materialising a huge resized image.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .buckets import cover_size
from .errors import DatasetError
from .probe import ORIENTATION_TRANSPOSE, header_orientation, open_image

logger = logging.getLogger(__name__)

_FIX = "re-export the image (e.g. open and save it as PNG) or delete it"
_WHITE = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency composited onto white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in ("I", "F") or mode.startswith("I;16"):
        # PNG 16-bit greyscale opens as "I" (0..65535): scale, do not clip (convert("L") would saturate).
        values = np.asarray(img, dtype=np.float64)
        if mode != "F":
            values = values / 257.0
        elif values.size and values.max() <= 1.0:  # float images are 0..1 or 0..255 by convention
            values = values * 255.0
        gray = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "1":
        img = img.convert("L")
    return img.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV, ...


def decode_upright_rgb(path: Path, target_size: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Decode, convert to RGB and apply EXIF orientation. `target_size` (w, h, upright) lets JPEG decode at a
    reduced scale that is still at least that big. Raises DatasetError."""
    try:
        img = open_image(path)
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, OSError, ...
        raise DatasetError(path, f"cannot open image ({type(exc).__name__}: {exc})", _FIX) from exc
    try:
        orientation = header_orientation(img)
        if target_size and img.format == "JPEG":
            w, h = target_size
            img.draft(None, (h, w) if orientation in (5, 6, 7, 8) else (w, h))
        img.load()
        rgb = to_rgb(img)
        if orientation in ORIENTATION_TRANSPOSE:
            rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orientation])
    except Exception as exc:  # truncated data, bad CRC, decoder errors: all "this file is broken"
        img.close()
        raise DatasetError(path, f"cannot decode image ({type(exc).__name__}: {exc})", _FIX) from exc
    if rgb is not img:
        img.close()  # free the decoded original early; `rgb` is a new image
    return rgb


def crop_offset(resized: Tuple[int, int], bucket: Tuple[int, int], random_crop: bool,
                rng: Optional[random.Random] = None) -> Tuple[int, int]:
    """(left, top) of the bucket-sized crop inside the resized image: centred, or random with random_crop."""
    excess_x, excess_y = resized[0] - bucket[0], resized[1] - bucket[1]
    if random_crop:
        rng = rng or random  # the module has randint too; pass an rng for reproducible crops
        return rng.randint(0, max(excess_x, 0)), rng.randint(0, max(excess_y, 0))
    return excess_x // 2, excess_y // 2


def flipped_left(left: int, resized_w: int, bucket_w: int) -> int:
    """A horizontal flip mirrors the crop window: its left edge, measured in the flipped resized image."""
    return resized_w - left - bucket_w


def center_crop_top_left(item, flip: bool = False) -> Tuple[int, int]:
    """crop_top_left (top, left) in resized-image pixels for a centre crop — what a cached latent was made with."""
    left, top = crop_offset(item.resized_size, item.bucket, False)
    if flip:
        left = flipped_left(left, item.resized_size[0], item.bucket[0])
    return top, left


def load_pil(item, flip: bool, rng: Optional[random.Random] = None) -> Tuple[Image.Image, Tuple[int, int]]:
    """Bucket-sized RGB PIL image and crop_top_left (top, left) in resized-image pixels (diffusers/SGM
    convention for SDXL). Random crop only when item.random_crop; `rng` makes it reproducible."""
    bucket = tuple(item.bucket)
    resized = tuple(item.resized_size)
    img = decode_upright_rgb(item.path, resized)
    width, height = img.size
    ow, oh = item.original_size
    if abs(width / height - ow / oh) > 0.01:
        # The file changed since the scan (JPEG draft scaling keeps the aspect ratio, so it is not this).
        logger.warning("%s: size changed since the scan (%dx%d, was %dx%d); refitting to bucket %s",
                       item.path, width, height, ow, oh, bucket)
        resized = cover_size(width, height, bucket)
        ow, oh = width, height
    left, top = crop_offset(resized, bucket, bool(item.random_crop), rng)
    if (width, height) == resized:
        out = img.crop((left, top, left + bucket[0], top + bucket[1]))
    else:
        # Map the crop window from resized-image pixels back to decoded-image pixels and resample only it.
        sx, sy = width / resized[0], height / resized[1]
        box = (left * sx, top * sy, (left + bucket[0]) * sx, (top + bucket[1]) * sy)
        # kohya: area filter when shrinking both ways, Lanczos otherwise (judged against the original size).
        shrinking = resized[0] < ow and resized[1] < oh
        out = img.resize(bucket, Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS, box=box)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = flipped_left(left, resized[0], bucket[0])
    return out, (top, left)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB uint8 HWC -> float32 CHW in [-1, 1] (kohya: ToTensor + Normalize([0.5], [0.5]))."""
    array = np.array(img, dtype=np.uint8)  # a writable copy: torch warns on read-only numpy buffers
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


def load_image(item, flip: bool, rng: Optional[random.Random] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(tensor [3, H, W] float32 in [-1, 1] with (W, H) = item.bucket, crop_top_left (top, left)).
    Raises DatasetError (path + fix) when the file cannot be decoded."""
    img, crop_top_left = load_pil(item, flip, rng)
    return pil_to_tensor(img), crop_top_left
