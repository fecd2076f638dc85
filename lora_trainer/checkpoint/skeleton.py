"""Empty models of the webui's classes, sized from a checkpoint: ldm `LatentDiffusion` from a config shaped like
`v1-inference.yaml` / `v2-inference(-v).yaml`, the project's sgm SDXL layout (testing/tiny_sdxl.py) for SDXL.

Built without random initialisation (every weight is overwritten by the checkpoint, as the webui's
`DisableInitialization` does) and without any download: text-encoder configs come from the checkpoint's shapes,
the CLIP tokenizer from the vocabulary open_clip ships.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import uuid
from pathlib import Path

import torch

from ..testing.tokenizer import tiny_cache_dir, write_clip_tokenizer
from .errors import CheckpointError


def clip_text_folder(sizes: dict) -> Path:
    """A folder with config.json + the tokenizer (no weights) for `CLIPTextModel` of these sizes."""
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(hidden_act="quick_gelu", projection_dim=sizes["hidden_size"], bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=49407, **sizes)
    key = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = tiny_cache_dir() / f"clip-config-{key}"
    if not (folder / "config.json").exists():
        tmp = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.tmp")
        write_clip_tokenizer(tmp)
        config.save_pretrained(tmp)
        try:
            tmp.rename(folder)  # atomic: several processes (ranks) may build it at once
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def register_open_clip(name: str, text: dict) -> str:
    """open_clip registry entry for a text tower of these sizes (the vision tower is tiny: ldm/sgm delete it)."""
    from open_clip import factory

    if text["mlp_ratio"] != 4:  # open_clip 2.20's text tower has a fixed 4x MLP
        raise CheckpointError(f"the OpenCLIP text encoder has a {text['mlp_ratio']:g}x MLP; SD2/SDXL use 4x")
    factory._MODEL_CONFIGS[name] = {
        "embed_dim": text["embed_dim"],
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {k: text[k] for k in ("context_length", "vocab_size", "width", "heads", "layers")},
    }
    return name


@contextlib.contextmanager
def no_init_no_download():
    """Skip parameter initialisation and build `CLIPTextModel.from_pretrained(folder)` from the folder's
    config.json only (the folder has no weights; the checkpoint supplies them)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    patched = []

    def patch(owner, attr, value):
        patched.append((owner, attr, owner.__dict__.get(attr)))  # None: inherited, restored by deleting
        setattr(owner, attr, value)

    def from_config(cls, path, *args, **kwargs):
        return cls(CLIPTextConfig.from_pretrained(path))

    def skip(*args, **kwargs):
        return None

    try:
        for owner in (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.Embedding):
            patch(owner, "reset_parameters", skip)
        patch(CLIPTextModel, "from_pretrained", classmethod(from_config))
        patch(CLIPTextModel, "_init_weights", skip)
        yield
    finally:
        for owner, attr, value in reversed(patched):
            if value is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, value)


def build_ldm(arch: str, unet: dict, text: dict, vae: dict, v_prediction: bool):
    """SD1 (HF CLIP text encoder) / SD2 (OpenCLIP) `LatentDiffusion` of these sizes."""
    from omegaconf import OmegaConf

    from ..testing.tiny_sd import tiny_sd_config
    from ..testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from ldm.util import instantiate_from_config

    v2 = arch == "sd2"
    depths = {d for d in unet["transformer_depth"] if d} | {unet["middle_depth"]}
    if len(depths) != 1:
        raise CheckpointError(f"the UNet's transformer depths {unet['transformer_depth']} differ per level; ldm "
                              "(SD1/SD2) needs one depth")
    config = tiny_sd_config(v2=v2, v_prediction=v_prediction)
    params = config["model"]["params"]
    unet_params = params["unet_config"]["params"]
    for key in ("num_heads", "num_head_channels"):
        unet_params.pop(key, None)
    unet_params.update(model_channels=unet["model_channels"], channel_mult=unet["channel_mult"],
                       num_res_blocks=unet["num_res_blocks"], attention_resolutions=unet["attention_resolutions"],
                       transformer_depth=depths.pop(), context_dim=unet["context_dim"],
                       use_linear_in_transformer=unet["use_linear"])
    if v2:
        from .shapes import unet_head_channels

        unet_params["num_head_channels"] = unet_head_channels(unet["model_channels"])
        key = hashlib.sha1(json.dumps(text, sort_keys=True).encode()).hexdigest()[:12]
        params["cond_stage_config"]["params"]["arch"] = register_open_clip(f"lora-trainer-ckpt-sd2-{key}", text)
    else:
        unet_params["num_heads"] = 8
        params["cond_stage_config"]["params"]["version"] = str(clip_text_folder(text))
    params["first_stage_config"]["params"].update(ddconfig=vae["ddconfig"], embed_dim=vae["embed_dim"])
    with no_init_no_download():
        model = instantiate_from_config(OmegaConf.create(config).model)
    return model


def build_sdxl(unet: dict, te1: dict, te2: dict, vae: dict):
    from ..testing.sgm_layout import UNetModel  # noqa: F401 - imports ldm with the torchvision shim first
    from ..testing.tiny_sdxl import TinyDiffusionEngine
    from .shapes import unet_head_channels

    if unet["attention_resolutions"] != [2, 4] and unet["attention_resolutions"] != [4, 2]:
        raise CheckpointError(f"the SDXL UNet has attention at {unet['attention_resolutions']}; SDXL base has it "
                              "at the 2nd and 3rd levels")
    if te1["intermediate_size"] != 4 * te1["hidden_size"] or te2["mlp_ratio"] != 4 or \
            te2["embed_dim"] != te2["width"]:
        raise CheckpointError("the SDXL text encoders' sizes do not match SDXL base's layout")
    key = hashlib.sha1(json.dumps([te1, te2], sort_keys=True).encode()).hexdigest()[:12]
    cfg = dict(model_channels=unet["model_channels"], channel_mult=unet["channel_mult"],
               num_head_channels=unet_head_channels(unet["model_channels"]),
               transformer_depth=unet["transformer_depth"], te1_width=te1["hidden_size"],
               te1_layers=te1["num_hidden_layers"], te1_heads=te1["num_attention_heads"], te2_width=te2["width"],
               te2_layers=te2["layers"], te2_heads=te2["heads"], vae=vae["ddconfig"],
               te1_dir=str(clip_text_folder(te1)), te2_arch=register_open_clip(f"lora-trainer-ckpt-te2-{key}", te2))
    with no_init_no_download():
        return TinyDiffusionEngine(cfg)
