"""Every knob the dataset code reads, with kohya's names and (mostly) kohya's defaults.

Deliberate differences from sd-scripts' defaults: `caption_extension` is ".txt" (kohya: ".caption", the cause of
"my captions were silently ignored"; we read the other one as a fallback anyway), and `upscale_small_images`
/ `max_image_pixels` exist (kohya upscales everything and lets PIL refuse bombs with an exception).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Tuple, Union

# PIL refuses images above 2 × Image.MAX_IMAGE_PIXELS with an exception; match that by default.
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485

# kohya's --max_train_steps default, used when neither epochs nor max_steps is given.
KOHYA_DEFAULT_MAX_STEPS = 1600


@dataclass
class DatasetOptions:
    resolution: Union[int, Tuple[int, int]] = 512  # int = square; (w, h) tuple also accepted
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_tag_dropout_rate: float = 0.0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    trigger_word: str = ""
    flip_aug: bool = False
    random_crop: bool = False
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    prior_loss_weight: float = 1.0
    # False: images smaller than the smallest bucket on both sides are skipped instead of upscaled.
    upscale_small_images: bool = True
    max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS
    # Schedule, only for the step counts in the report; None/None means kohya's default of 1600 steps.
    epochs: Optional[int] = None
    max_steps: Optional[int] = None

    def __post_init__(self):
        # kohya adds the leading dot when it is missing ("txt" -> ".txt"); so do we.
        ext = (self.caption_extension or "").strip()
        if ext and not ext.startswith("."):
            ext = "." + ext
        self.caption_extension = ext
        if isinstance(self.resolution, list):
            self.resolution = tuple(self.resolution)

    @property
    def resolution_wh(self) -> Tuple[int, int]:
        if isinstance(self.resolution, tuple):
            return int(self.resolution[0]), int(self.resolution[1])
        return int(self.resolution), int(self.resolution)

    @property
    def bucket_range(self) -> Tuple[int, int]:
        """min/max bucket side rounded to the step the way kohya does (min down, max up)."""
        step = self.bucket_reso_steps
        lo = self.min_bucket_reso - self.min_bucket_reso % step
        hi = self.max_bucket_reso + (-self.max_bucket_reso) % step
        return lo, hi

    def validate(self) -> DatasetOptions:
        """Raise ValueError naming the first bad field; return self so calls can be chained."""

        def bad(name: str, why: str):
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        res = self.resolution
        parts = res if isinstance(res, tuple) else (res,)
        if len(parts) not in (1, 2) or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in parts):
            bad("resolution", "must be a positive int or a (width, height) pair of positive ints")
        for name in ("min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "batch_size",
                     "gradient_accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "must be an integer >= 1")
        if self.bucket_reso_steps % 8:
            bad("bucket_reso_steps", "must be a multiple of 8 (the VAE downsamples by 8); kohya uses 64")
        if self.min_bucket_reso > self.max_bucket_reso:
            bad("min_bucket_reso", f"must not exceed max_bucket_reso ({self.max_bucket_reso})")
        w, h = self.resolution_wh
        if min(w, h) < self.bucket_reso_steps:
            bad("resolution", f"each side must be at least bucket_reso_steps ({self.bucket_reso_steps})")
        if self.enable_bucket and not self.bucket_no_upscale:
            lo, hi = self.bucket_range
            # Same checks as kohya's adjust_min_max_bucket_reso_by_steps.
            if min(w, h) < lo:
                bad("min_bucket_reso", f"must be <= the smaller side of resolution ({min(w, h)})")
            if max(w, h) > hi:
                bad("max_bucket_reso", f"must be >= the larger side of resolution ({max(w, h)})")
        if not self.caption_extension or self.caption_extension == ".":
            bad("caption_extension", "must be a file extension such as .txt or .caption")
        if not isinstance(self.keep_tokens, int) or self.keep_tokens < 0:
            bad("keep_tokens", "must be an integer >= 0")
        for name in ("caption_tag_dropout_rate", "caption_dropout_rate"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                bad(name, "must be between 0 and 1")
        if not isinstance(self.caption_dropout_every_n_epochs, int) or self.caption_dropout_every_n_epochs < 0:
            bad("caption_dropout_every_n_epochs", "must be an integer >= 0 (0 = off)")
        if float(self.prior_loss_weight) < 0:
            bad("prior_loss_weight", "must be >= 0")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            bad("max_image_pixels", "must be >= 1, or None for no limit")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                bad(name, "must be None or an integer >= 1")
        return self

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["resolution"] = list(self.resolution_wh)
        return out
