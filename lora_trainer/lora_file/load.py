"""Read a LoRA `.safetensors` back, with a clear LoRAFormatError for anything that is not one."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LoRAFormatError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def read_header(path) -> dict:
    """The parsed JSON header (tensor entries and `__metadata__`), validated without loading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise LoRAFormatError(f"{path.name}: not a safetensors file ({size} bytes, too short for a header)")
        header_length = int.from_bytes(prefix, "little")
        if header_length < 2 or header_length > min(MAX_HEADER_BYTES, size - 8):
            raise LoRAFormatError(f"{path.name}: not a safetensors file (header length {header_length} does not fit "
                                  f"a {size}-byte file; a .ckpt/.pt pickle or another format?)")
        raw = f.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoRAFormatError(f"{path.name}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise LoRAFormatError(f"{path.name}: corrupt safetensors header (not a JSON object)")
    return header


def load_lora(path) -> tuple:
    """(tensors, metadata) of a kohya LoRA file; LoRAFormatError if it is not a readable safetensors LoRA."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    metadata = header.get("__metadata__") or {}
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise LoRAFormatError(f"{path.name}: corrupt safetensors file ({exc})") from None
    if not any(k.endswith((".lora_down.weight", ".lora_up.weight")) for k in tensors):
        sample = ", ".join(sorted(tensors)[:3]) or "no tensors at all"
        raise LoRAFormatError(f"{path.name}: not a kohya LoRA (no lora_down/lora_up tensors; first keys: {sample}). "
                              "A checkpoint, embedding or LyCORIS file?")
    return tensors, {str(k): str(v) for k, v in metadata.items()}
