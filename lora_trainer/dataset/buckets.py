"""Aspect-ratio bucketing, re-implemented from kohya's model_util.make_bucket_resolutions and
BucketManager.select_bucket (reference §4.1, §4.2). Plain Python: the CLI must not pay for numpy/torch imports.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

from .options import DatasetOptions

Size = Tuple[int, int]  # always (width, height)


def make_bucket_resolutions(max_reso: Size, min_size: int = 256, max_size: int = 1024,
                            divisible: int = 64) -> List[Size]:
    """kohya's bucket list: the largest square of the area, plus every (w, h) and (h, w) whose area fits."""
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos = set()
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def round_to_steps(x: float, steps: int) -> int:
    x = int(x + 0.5)
    return x - x % steps


def cover_size(width: int, height: int, bucket: Size) -> Size:
    """Size to resize (width, height) to so that it covers `bucket` with the aspect ratio kept (kohya's rule)."""
    bucket_w, bucket_h = bucket
    if width / height > bucket_w / bucket_h:  # wider than the bucket: match heights, crop the sides
        scale = bucket_h / height
    else:  # taller (or equal): match widths, crop top/bottom
        scale = bucket_w / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    # Float rounding must never leave the image a pixel short of the bucket.
    return max(resized[0], bucket_w), max(resized[1], bucket_h)


def select_bucket(width: int, height: int, resolutions: List[Size]) -> Tuple[Size, Size, float]:
    """Predefined buckets, upscaling allowed. Returns (bucket, resized_size, ar_error = bucket_ar - image_ar)."""
    aspect = width / height
    if (width, height) in resolutions:
        bucket = (width, height)
    else:
        # Smallest |bucket_ar - image_ar|; ties go to the first bucket in sorted order, like numpy's argmin.
        bucket = min(resolutions, key=lambda r: abs(r[0] / r[1] - aspect))
    return bucket, cover_size(width, height, bucket), bucket[0] / bucket[1] - aspect


def select_bucket_no_upscale(width: int, height: int, max_area: int, steps: int) -> Tuple[Size, Size, float]:
    """bucket_no_upscale: shrink to max_area if larger, never enlarge; the bucket is the size floored to `steps`
    (the remainder is cropped). A side shorter than `steps` gives a 0 bucket side: the caller must skip the image."""
    aspect = width / height
    if width * height > max_area:
        resized_width = math.sqrt(max_area * aspect)
        resized_height = max_area / resized_width
        # Round one side to the step and derive the other; keep whichever keeps the ratio closer (kohya).
        w_rounded = round_to_steps(resized_width, steps)
        h_in_w = round_to_steps(w_rounded / aspect, steps)
        ar_w = w_rounded / h_in_w if h_in_w else math.inf
        h_rounded = round_to_steps(resized_height, steps)
        w_in_h = round_to_steps(h_rounded * aspect, steps)
        ar_h = w_in_h / h_rounded if h_rounded else math.inf
        if abs(ar_w - aspect) < abs(ar_h - aspect):
            resized = (w_rounded, int(w_rounded / aspect + 0.5))
        else:
            resized = (int(h_rounded * aspect + 0.5), h_rounded)
    else:
        resized = (width, height)
    bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
    ar_error = bucket[0] / bucket[1] - aspect if bucket[1] else math.inf
    return bucket, resized, ar_error


class Bucketer:
    """Options -> bucket assignment, with the bucket list computed once."""

    def __init__(self, options: DatasetOptions):
        self.options = options
        self.resolution = options.resolution_wh
        self.max_area = self.resolution[0] * self.resolution[1]
        self.steps = options.bucket_reso_steps
        self.resolutions: Optional[List[Size]] = None
        if not options.enable_bucket:
            # One fixed bucket; images are still resized to cover it and centre-cropped (kohya refuses smaller
            # images instead — we resize them like every other bucket).
            self.resolutions = [self.resolution]
        elif not options.bucket_no_upscale:
            lo, hi = options.bucket_range
            self.resolutions = make_bucket_resolutions(self.resolution, lo, hi, self.steps)

    @property
    def smallest_side(self) -> int:
        """The shortest bucket side an image can land in (used for the "tiny image" rule)."""
        if self.resolutions:
            return min(min(r) for r in self.resolutions)
        return self.steps

    def assign(self, width: int, height: int) -> Tuple[Size, Size, float]:
        if self.resolutions is None:
            return select_bucket_no_upscale(width, height, self.max_area, self.steps)
        return select_bucket(width, height, self.resolutions)

    def describe(self) -> str:
        o = self.options
        w, h = self.resolution
        if not o.enable_bucket:
            return f"bucketing off: every image resized and cropped to {w}x{h}"
        if o.bucket_no_upscale:
            return f"no-upscale buckets: up to {w}x{h} pixels of area, sides floored to multiples of {self.steps}"
        lo, hi = o.bucket_range
        return f"{len(self.resolutions or [])} buckets for {w}x{h}, sides {lo}..{hi}, step {self.steps}"
