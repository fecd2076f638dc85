"""Write a kohya LoRA `.safetensors`: cast, add the sshs hashes, write to a temp file, then rename into place."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch

from .hashes import precalculate_safetensors_hashes

SAVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def save_lora(path, tensors: dict, metadata: dict, dtype: torch.dtype = torch.float16, overwrite: bool = False) -> Path:
    """Save `tensors` (every one, alpha included, cast to `dtype` like kohya's save_weights) with `metadata` plus
    `sshs_model_hash`/`sshs_legacy_hash`. Atomic: readers never see a half-written file. An existing file raises
    FileExistsError unless overwrite=True."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name}: LoRA files are saved as .safetensors")
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"save dtype must be one of {', '.join(map(str, SAVE_DTYPES))}, not {dtype}")
    bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise TypeError(f"metadata keys and values must be strings (safetensors header); {bad[0]!r} is not")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    cast = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in tensors.items()}
    model_hash, legacy_hash = precalculate_safetensors_hashes(cast, metadata)
    data = save(cast, {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash})
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, data, overwrite)
    return path


def _write_atomically(path: Path, data: bytes, overwrite: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # same dir: rename stays atomic
    try:
        with tmp.open("xb") as f:  # plain open, so the file gets the usual umask permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if `path` appeared meanwhile: never clobbers a file we were not asked to
        except FileExistsError:
            raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
