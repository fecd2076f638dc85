"""Dataset subsystem: kohya-style folders -> checked, bucketed, captioned samples and a report.

Scanning (scan, report, buckets, captions, batching) imports neither torch nor numpy, so `python -m lora_trainer
dataset` stays fast; `load_image` and `LatentCache` (which need torch) are imported on first use.
"""

from __future__ import annotations

from .batching import BucketBatchSampler, compute_steps
from .buckets import make_bucket_resolutions, select_bucket, select_bucket_no_upscale
from .captions import process_caption, read_caption
from .errors import DatasetError
from .options import DatasetOptions
from .report import DatasetReport, FolderReport
from .scan import Dataset, ImageItem, scan_dataset

_LAZY = {"load_image": ".images", "LatentCache": ".latent_cache", "default_cache_dir": ".latent_cache"}

__all__ = [
    "BucketBatchSampler", "Dataset", "DatasetError", "DatasetOptions", "DatasetReport", "FolderReport", "ImageItem",
    "compute_steps", "make_bucket_resolutions", "process_caption", "read_caption", "scan_dataset", "select_bucket",
    "select_bucket_no_upscale", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
