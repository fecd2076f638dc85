"""Tiny text encoders of the classes the webui uses: HF `CLIPTextModel` (SD1, SDXL TE1) and OpenCLIP (SD2, SDXL TE2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from .tokenizer import tiny_cache_dir, write_clip_tokenizer

# SD1 uses CLIP ViT-L/14's text tower (hidden 768, 12 layers); this keeps its shape, not its size.
TINY_CLIP_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def tiny_clip_text_dir(hidden_size: int = 32, layers: int = 3, heads: int = 4, intermediate: int = 0) -> Path:
    """A folder `CLIPTokenizer/CLIPTextModel.from_pretrained` accept, offline (what ldm's FrozenCLIPEmbedder loads).

    The defaults are tiny; (768, 12, 12, 3072) is CLIP ViT-L/14's text tower (SD1, SDXL TE1) for benchmarks."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = dict(TINY_CLIP_TEXT_CONFIG, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate or hidden_size * 2, projection_dim=hidden_size)
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    folder = tiny_cache_dir() / f"clip-text-{key}"
    if (folder / "config.json").exists() and (folder / "merges.txt").exists():
        return folder
    tmp = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.tmp")
    write_clip_tokenizer(tmp)
    CLIPTextModel(CLIPTextConfig(**config)).save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: a concurrent builder either wins or finds it complete
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def register_tiny_open_clip(name: str, width: int = 32, layers: int = 3, heads: int = 4, embed_dim: int = 32) -> str:
    """Add a tiny entry to open_clip's model-config registry; ldm/sgm embedders then build it with random weights."""
    from .torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from open_clip import factory

    factory._MODEL_CONFIGS[name] = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": heads, "layers": layers},
    }
    return name
