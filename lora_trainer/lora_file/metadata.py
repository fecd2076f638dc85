"""The `ss_*` and `modelspec.*` metadata kohya writes into a LoRA (kohya-lora-format.md §2), as strings.

A1111 reads `ss_output_name` (alias), `ss_base_model_version`/`ss_v2` (which model versions show the card),
`ss_tag_frequency`, `ss_dataset_dirs`, `ss_bucket_info`, `ss_training_started_at` and more (webui-integration.md §4.5).
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

NETWORK_MODULE = "networks.lora"  # what kohya writes; A1111 shows it on the card
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sd2v": "sd_v2_v", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCHITECTURE = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512",
                          "sd2v": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base"}
MODELSPEC_IMPLEMENTATION = {"sdxl": "https://github.com/Stability-AI/generative-models"}  # SD1/SD2 LoRA: "diffusers"
DEFAULT_RESOLUTION = {"sd1": 512, "sd2": 512, "sd2v": 768, "sdxl": 1024}
MODELSPEC_VERSION = "1.0.1"  # as sd-scripts main writes (library/sai_model_spec.py)


def _text(value: Any) -> str:
    """kohya: str() everything; JSON for structures."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _size(resolution, arch: str) -> tuple:
    if resolution is None:
        resolution = DEFAULT_RESOLUTION[arch]
    if isinstance(resolution, int):
        return resolution, resolution
    width, height = resolution
    return int(width), int(height)


def build_metadata(arch: str, *, output_name: str, rank: int, alpha: float, conv_rank: int = 0,
                   conv_alpha: float = 1.0, dropout: float = 0.0, training: dict | None = None,
                   tag_frequency: dict | None = None, dataset_dirs: dict | None = None,
                   reg_dataset_dirs: dict | None = None, bucket_info: dict | None = None, resolution=None,
                   session_id: int | None = None, training_started_at: float | None = None,
                   steps: int | None = None, epoch: int | None = None, clip_skip: int | None = None,
                   sd_model_name: str | None = None, sd_model_hash: str | None = None,
                   new_sd_model_hash: str | None = None, title: str | None = None, author: str | None = None,
                   description: str | None = None, license: str | None = None, tags: str | None = None,
                   now: float | None = None, prediction_type: str | None = None,
                   timestep_range: tuple | None = None) -> dict:
    """All values are strings. `training` holds further training parameters (`learning_rate`, `optimizer`, ...);
    each becomes `ss_<key>` (a key may already start with `ss_`). Pass the same `session_id` and
    `training_started_at` for every file of one run (kohya does); they default to a random id and now.
    `prediction_type` ("epsilon" / "v") is the trained model's (default: v for SD2-v only); `ss_clip_skip` is
    written as kohya writes it, "None" when not set; `ss_network_args` only for a LoCon (kohya: only with
    network_args), with kohya's `dropout` entry."""
    if arch not in BASE_MODEL_VERSION:
        raise ValueError(f"unknown architecture {arch!r}")
    now = time.time() if now is None else now
    width, height = _size(resolution, arch)
    meta: dict = {}
    for key, value in (training or {}).items():
        meta[key if key.startswith("ss_") else f"ss_{key}"] = _text(value)
    prediction_type = prediction_type or ("v" if arch == "sd2v" else "epsilon")
    optional = {
        "ss_tag_frequency": tag_frequency, "ss_dataset_dirs": dataset_dirs, "ss_reg_dataset_dirs": reg_dataset_dirs,
        "ss_bucket_info": bucket_info, "ss_steps": steps, "ss_epoch": epoch,
        "ss_sd_model_name": sd_model_name, "ss_sd_model_hash": sd_model_hash,
        "ss_new_sd_model_hash": new_sd_model_hash,
    }
    meta.update({key: _text(value) for key, value in optional.items() if value is not None})
    meta.update({
        "ss_session_id": str(session_id if session_id is not None else random.randint(0, 2**32)),
        "ss_training_started_at": str(training_started_at if training_started_at is not None else now),
        "ss_training_finished_at": str(now),
        "ss_output_name": output_name,
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_dropout": str(float(dropout)),
        "ss_base_model_version": BASE_MODEL_VERSION[arch],
        "ss_v2": str(arch in ("sd2", "sd2v")),
        "ss_v_parameterization": str(prediction_type == "v"),
        "ss_clip_skip": str(clip_skip),
        "ss_resolution": str((width, height)),
    })
    if conv_rank:  # kohya: json of the network_args it was given, plus the dropout it adds for LyCORIS
        meta["ss_network_args"] = json.dumps({"conv_dim": str(conv_rank), "conv_alpha": _number(conv_alpha),
                                              "dropout": float(dropout) if dropout else None})
    meta.update(modelspec(arch, title=title or output_name, resolution=(width, height), now=now,
                          clip_skip=clip_skip, author=author, description=description, license=license, tags=tags,
                          prediction_type=prediction_type, timestep_range=timestep_range))
    return meta


def _number(value) -> str:
    """1.0 -> "1", as the kohya_ss GUI writes `conv_alpha=1` into network_args."""
    return f"{float(value):g}"


def modelspec(arch: str, *, title: str, resolution: tuple, now: float, clip_skip: int | None = None,
              author: str | None = None, description: str | None = None, license: str | None = None,
              tags: str | None = None, prediction_type: str | None = None,
              timestep_range: tuple | None = None) -> dict:
    """`modelspec.*` keys as sd-scripts' `sai_model_spec.build_metadata(..., lora=True)` writes them (1.0.1:
    implementation_version, timestep_range when min/max timestep were set, encoder_layer = clip skip)."""
    from .. import __version__

    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{MODELSPEC_ARCHITECTURE[arch]}/lora",
        "modelspec.implementation": MODELSPEC_IMPLEMENTATION.get(arch, "diffusers"),
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.fromtimestamp(int(now)).isoformat(),
        "modelspec.prediction_type": prediction_type or ("v" if arch == "sd2v" else "epsilon"),
        "modelspec.implementation_version": f"sd-webui-train-lora/{__version__}",  # kohya: sd-scripts/<commit>
    }
    timesteps = f"{timestep_range[0]},{timestep_range[1]}" if timestep_range else None
    optional = {"encoder_layer": clip_skip, "author": author, "description": description, "license": license,
                "tags": tags, "timestep_range": timesteps}
    spec.update({f"modelspec.{key}": str(value) for key, value in optional.items() if value is not None})
    return spec
