"""VAE latents per image (and per flipped image), in memory or as .npz files beside the dataset.

Unlike kohya (reference §5.8: the cache file is trusted once it exists), an entry's key covers everything the
latent depends on — the file (path, size, mtime), bucket, resized size, crop mode, flip and the VAE — so
changing any of them just makes a new entry instead of silently training on stale latents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .errors import DatasetError
from .images import center_crop_top_left, load_image
from .layout import CACHE_DIR_NAME

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1  # bump when image preprocessing changes, to invalidate every old entry
EncodeFn = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]


def default_cache_dir(dataset_dir: Union[str, Path]) -> Path:
    return Path(dataset_dir) / CACHE_DIR_NAME


def cache_key(item, flip: bool, vae_fingerprint: str) -> str:
    path = Path(item.path).resolve()
    stat = path.stat()
    parts = [CACHE_FORMAT_VERSION, str(path), stat.st_size, stat.st_mtime_ns, list(item.bucket),
             list(item.resized_size), "random" if item.random_crop else "center", bool(flip), vae_fingerprint]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:40]


class LatentCache:
    """`encode_fn(images [B, 3, H, W] in [-1, 1], CPU) -> latents [B, C, H/8, W/8]` is the trainer's VAE
    (sampled and scaled as it wants them). `cache_dir=None` keeps latents in memory; a folder stores one .npz
    per entry there (written atomically). After prepare(), get() only reads; call release_encoder() to drop the
    VAE reference. Returned tensors are float32 on the CPU and shared: do not modify them in place."""

    def __init__(self, encode_fn: Optional[EncodeFn], vae_fingerprint: str, cache_dir: Union[str, Path, None] = None,
                 batch_size: int = 4):
        if not vae_fingerprint:
            raise ValueError("vae_fingerprint must identify the VAE (e.g. a hash of its weights), it keys the cache")
        self.encode_fn = encode_fn
        self.vae_fingerprint = vae_fingerprint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = max(1, int(batch_size))
        self._memory: Dict[str, torch.Tensor] = {}
        self._keys: Dict[tuple, str] = {}
        self.encoded = 0  # images pushed through encode_fn (flipped ones count separately)

    # ---- keys and storage ----------------------------------------------------------------------------------
    def key(self, item, flip: bool) -> str:
        # Memoised per run: the key of an entry must not change under the trainer's feet mid-training.
        memo = (str(item.path), tuple(item.bucket), tuple(item.resized_size), bool(item.random_crop), bool(flip))
        if memo not in self._keys:
            try:
                self._keys[memo] = cache_key(item, flip, self.vae_fingerprint)
            except OSError as exc:
                raise DatasetError(item.path, f"cannot read file ({exc.strerror or exc})",
                                   "it was moved or deleted after the scan; scan the dataset again") from exc
        return self._keys[memo]

    def _file(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npz"

    def _load(self, key: str) -> Optional[torch.Tensor]:
        path = self._file(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                if str(data["key"]) != key:
                    return None
                return torch.from_numpy(np.array(data["latents"], dtype=np.float32))
        except Exception as exc:  # a damaged file is just a miss; it gets rewritten
            logger.warning("ignoring unreadable latent cache file %s (%s)", path, exc)
            return None

    def _store(self, key: str, latents: torch.Tensor, item, flip: bool):
        if self.cache_dir is None:
            self._memory[key] = latents
            return
        path = self._file(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, latents=latents.numpy(), key=np.array(key), source=np.array(str(item.path)),
                         original_size=np.array(item.original_size), bucket=np.array(item.bucket),
                         crop_top_left=np.array(center_crop_top_left(item, flip)), flipped=np.array(flip))
            os.replace(tmp, path)  # atomic: readers see the old state or the whole new file
        except OSError as exc:
            # Read-only dataset folder, disk full...: keep training from memory rather than fail.
            logger.warning("cannot write latent cache file %s (%s); keeping this latent in memory", path, exc)
            self._memory[key] = latents
            try:
                tmp.unlink()
            except OSError:
                pass

    def is_cached(self, item, flip: bool = False) -> bool:
        key = self.key(item, flip)
        if key in self._memory:
            return True
        return self.cache_dir is not None and self._load(key) is not None

    # ---- encoding ------------------------------------------------------------------------------------------
    def _encode(self, images: List[torch.Tensor]) -> List[torch.Tensor]:
        with torch.no_grad():
            latents = self.encode_fn(torch.stack(images))
        latents = latents.detach().to("cpu", torch.float32)
        if torch.isnan(latents).any():
            logger.warning("NaN in VAE latents replaced with 0 (an fp16 VAE overflowing? try it in fp32)")
            latents = torch.nan_to_num(latents, nan=0.0)
        self.encoded += len(images)
        return list(latents)

    def _encode_group(self, entries: List[Tuple[object, List[bool]]], failures: list, done: List[int],
                      total: int, progress_cb: Optional[ProgressFn]):
        """Entries share one bucket, so their tensors stack. Each image is decoded once; its flip is a tensor op."""
        images, targets = [], []
        for item, flips in entries:
            try:
                tensor, _ = load_image(item, flip=False)
            except DatasetError as exc:
                logger.warning("latent cache: %s", exc)
                failures.append((item, str(exc)))
                done[0] += len(flips)
                continue
            for flip in flips:
                images.append(torch.flip(tensor, dims=[2]) if flip else tensor)
                targets.append((item, flip))
        if images:
            for (item, flip), latents in zip(targets, self._encode(images)):
                self._store(self.key(item, flip), latents.clone(), item, flip)
        done[0] += len(targets)
        if progress_cb is not None:
            progress_cb(done[0], total)

    def prepare(self, items, flip_aug: bool, progress_cb: Optional[ProgressFn] = None) -> List[Tuple[object, str]]:
        """Encode every missing entry (plus flipped ones with flip_aug), batched per bucket. Returns
        [(item, reason)] for images that could not be decoded: drop them from training."""
        if any(getattr(i, "random_crop", False) for i in items):
            raise ValueError("random_crop cannot be combined with the latent cache: a cached latent fixes one crop "
                             "(kohya refuses this too); turn one of them off")
        flips = [False, True] if flip_aug else [False]
        by_bucket: Dict[tuple, list] = defaultdict(list)
        seen = set()
        failures: List[Tuple[object, str]] = []
        for item in items:
            try:
                missing = [f for f in flips if not self.is_cached(item, f)]
                ident = self.key(item, False)
            except DatasetError as exc:
                failures.append((item, str(exc)))
                continue
            if missing and ident not in seen:
                seen.add(ident)
                by_bucket[tuple(item.bucket)].append((item, missing))
        total = sum(len(m) for entries in by_bucket.values() for _, m in entries)
        if total and self.encode_fn is None:
            raise RuntimeError(f"{total} latents are not cached and no VAE encode function was given")
        done = [0]
        for bucket in sorted(by_bucket):
            entries = by_bucket[bucket]
            # Chunk so that a chunk holds at most batch_size tensors (an entry with flips holds two).
            chunk: list = []
            for entry in entries:
                if chunk and sum(len(f) for _, f in chunk) + len(entry[1]) > self.batch_size:
                    self._encode_group(chunk, failures, done, total, progress_cb)
                    chunk = []
                chunk.append(entry)
            if chunk:
                self._encode_group(chunk, failures, done, total, progress_cb)
        return failures

    def get(self, item, flip: bool = False) -> torch.Tensor:
        key = self.key(item, flip)
        latents = self._memory.get(key)
        if latents is None and self.cache_dir is not None:
            latents = self._load(key)
        if latents is not None:
            return latents
        if self.encode_fn is None:
            raise DatasetError(item.path, "latent not in the cache and the VAE was released",
                               "call LatentCache.prepare() on every item before releasing the encoder")
        tensor, _ = load_image(item, flip=flip)
        latents = self._encode([tensor])[0].clone()
        self._store(key, latents, item, flip)
        return latents

    def release_encoder(self):
        """Drop the reference to the VAE so it can be freed (everything needed must be prepared)."""
        self.encode_fn = None
