"""Read a single-file checkpoint (.safetensors / .ckpt) into a flat state dict, as the webui's `read_state_dict`
does: unwrap a Lightning `state_dict`, and rename old SD1 text-encoder keys (`cond_stage_model.transformer.encoder.`
-> `...transformer.text_model.encoder.`, webui `checkpoint_dict_replacements_sd1`)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, Tuple

import torch

from .errors import CheckpointError

SD1_REPLACEMENTS = {  # modules/sd_models.py: checkpoint_dict_replacements_sd1
    "cond_stage_model.transformer.embeddings.": "cond_stage_model.transformer.text_model.embeddings.",
    "cond_stage_model.transformer.encoder.": "cond_stage_model.transformer.text_model.encoder.",
    "cond_stage_model.transformer.final_layer_norm.": "cond_stage_model.transformer.text_model.final_layer_norm.",
}
SD2_TURBO_REPLACEMENTS = {"conditioner.embedders.0.": "cond_stage_model."}


def read_safetensors_metadata(path: Path) -> dict:
    """The `__metadata__` block, checking that the header and the tensor data fit in the file (a truncated
    download otherwise fails deep inside safetensors with an unhelpful message)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: the file is empty or truncated ({size} bytes); download it again")
        (length,) = struct.unpack("<Q", head)
        if length <= 2 or 8 + length > size:
            raise CheckpointError(f"{path}: not a complete safetensors file (header of {length} bytes in a file of "
                                  f"{size}); it is truncated or not a safetensors file: download it again")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({exc}); the file is "
                                  "damaged: download it again") from exc
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise CheckpointError(f"{path}: truncated: the tensors need {8 + length + end} bytes, the file has {size}; "
                              "download it again")
    return header.get("__metadata__") or {}


def _rename(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    turbo = state_dict.get("conditioner.embedders.0.model.ln_final.weight")
    replacements = SD2_TURBO_REPLACEMENTS if turbo is not None and turbo.shape[0] == 1024 else SD1_REPLACEMENTS
    out = {}
    for key, value in state_dict.items():
        for old, new in replacements.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def read_state_dict(path) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(state dict on the CPU, safetensors metadata or {})."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        metadata = read_safetensors_metadata(path)
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read the tensors ({exc}); the file is damaged") from exc
    elif suffix in (".ckpt", ".pt", ".pth", ".bin"):
        metadata = {}
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle/zip errors of many kinds
            raise CheckpointError(f"{path}: cannot read this .ckpt ({type(exc).__name__}: {exc}); it is truncated, "
                                  "damaged or not a checkpoint: download it again, or use the .safetensors "
                                  "version") from exc
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
        loaded = loaded.get("state_dict", loaded)
        state_dict = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; use a .safetensors or .ckpt file")
    if not state_dict:
        raise CheckpointError(f"{path}: holds no tensors")
    return _rename(state_dict), metadata


VAE_IGNORE = {"model_ema.decay", "model_ema.num_updates"}  # modules/sd_vae.py: vae_ignore_keys


def read_vae(path) -> Dict[str, torch.Tensor]:
    """A VAE file as the webui's `load_vae_dict` reads it: loss.* and EMA counters dropped; a full checkpoint's
    `first_stage_model.` prefix is also accepted."""
    tensors, _ = read_state_dict(path)
    if any(k.startswith("first_stage_model.") for k in tensors):
        tensors = {k[len("first_stage_model."):]: v for k, v in tensors.items() if k.startswith("first_stage_model.")}
    tensors = {k: v for k, v in tensors.items() if not k.startswith("loss") and k not in VAE_IGNORE}
    if any(k.startswith("encoder.down_blocks.") for k in tensors):
        raise CheckpointError(f"{path}: a diffusers-format VAE; the webui (and this loader) read the original "
                              "layout: use the single-file VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors)")
    if "encoder.conv_in.weight" not in tensors:
        raise CheckpointError(f"{path}: not an SD VAE (no encoder.conv_in.weight)")
    return tensors
