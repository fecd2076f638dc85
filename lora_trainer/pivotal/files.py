"""Where the trained vectors go: bundled in the LoRA file, and as a separate embedding file.

Layouts are the webui's (extensions-builtin/Lora/networks.py load_network; textual_inversion.py
create_embedding_from_data):
- bundled, SD1/SD2: `bundle_emb.<token>.string_to_param.*` = [n, dim] (the webui's own TI layout);
  SDXL: `bundle_emb.<token>.clip_l` = [n, 768] and `bundle_emb.<token>.clip_g` = [n, 1280].
- separate `<token>.safetensors` (A1111 and ComfyUI): SD1/SD2 `emb_params` = [n, dim]; SDXL `clip_l` / `clip_g`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Dict

import torch

BUNDLE_PREFIX = "bundle_emb"


def bundle_tensors(token: str, vectors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The keys to add to the LoRA state dict for `vectors` ({"clip_l": ..} / {"clip_g": ..} / both)."""
    if set(vectors) == {"clip_l", "clip_g"}:
        return {f"{BUNDLE_PREFIX}.{token}.{key}": v for key, v in vectors.items()}
    (vec,) = vectors.values()
    return {f"{BUNDLE_PREFIX}.{token}.string_to_param.*": vec}


def embedding_file_tensors(vectors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if set(vectors) == {"clip_l", "clip_g"}:
        return dict(vectors)
    (vec,) = vectors.values()
    return {"emb_params": vec}


def read_bundle(state_dict: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """{name: vec} the way the webui reads a LoRA file: networks.py's bundle_emb grouping, then
    create_embedding_from_data's choice of layout (vec = [n, dim] tensor, or {"clip_l", "clip_g"} for SDXL)."""
    grouped: Dict[str, dict] = {}
    for key, weight in state_dict.items():
        head, _, network_part = key.partition(".")
        if head != BUNDLE_PREFIX:
            continue
        name, vec_name = network_part.split(".", 1)
        data = grouped.setdefault(name, {})
        if vec_name.split(".")[0] == "string_to_param":
            data["string_to_param"] = {vec_name.split(".", 1)[1]: weight}
        else:
            data[vec_name] = weight
    out: Dict[str, object] = {}
    for name, data in grouped.items():
        if "string_to_param" in data:
            (vec,) = data["string_to_param"].values()
            out[name] = vec.float()
        elif "clip_g" in data and "clip_l" in data:
            out[name] = {k: v.float() for k, v in data.items()}
        else:
            raise ValueError(f"bundled embedding {name!r} has neither string_to_param nor clip_l/clip_g")
    return out


def save_embedding_file(folder, token: str, vectors: Dict[str, torch.Tensor], metadata: Dict[str, str],
                        dtype: torch.dtype = torch.float32) -> Path:
    """Write `<folder>/<token>.safetensors` atomically (replaces an older one of this token)."""
    from safetensors.torch import save

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{token}.safetensors"
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in embedding_file_tensors(vectors).items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_bytes(save(tensors, metadata))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
