"""The hashes kohya precomputes into LoRA metadata (kohya-lora-format.md §2.2, `train_util`):

- `sshs_model_hash` = "addnet" hash: SHA-256 of everything after the 8-byte length and the JSON header, i.e. of
  the tensor data only. It equals what A1111 computes from the final file (`hashes.addnet_hash_safetensors`).
- `sshs_legacy_hash`: SHA-256 of the 0x10000 bytes at offset 0x100000, first 8 hex digits.

Both are taken from `safetensors.torch.save(tensors, <only the ss_* metadata>)`, so editing user metadata later
does not change them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

LEGACY_OFFSET, LEGACY_LENGTH = 0x100000, 0x10000


def addnet_hash_bytes(data: bytes) -> str:
    header_length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_length:]).hexdigest()


def addnet_hash_legacy_bytes(data: bytes) -> str:
    return hashlib.sha256(data[LEGACY_OFFSET:LEGACY_OFFSET + LEGACY_LENGTH]).hexdigest()[:8]


def addnet_hash_file(path) -> str:
    """The addnet hash of a file on disk, read in blocks (what A1111 shows when `sshs_model_hash` is absent)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_length)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def precalculate_safetensors_hashes(tensors: dict, metadata: dict) -> tuple:
    """(sshs_model_hash, sshs_legacy_hash) as kohya's `precalculate_safetensors_hashes` computes them."""
    from safetensors.torch import save

    training_metadata = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(tensors, training_metadata)
    return addnet_hash_bytes(data), addnet_hash_legacy_bytes(data)
