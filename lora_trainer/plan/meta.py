"""Copies of a model's module tree whose weights live on the `meta` device: the real structure, no memory.

`meta_copy(module)` deep-copies a loaded module with every parameter and buffer replaced by a meta tensor of the
same shape and dtype (so the webui's class-level patches and the checkpoint's real sizes come along).
`meta_model(arch, dtype)` builds an architecture from its config (lora_trainer.testing's full-size configs) on
meta, for the CLI's `--arch` path where no checkpoint is loaded.
"""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import torch
from torch import nn


def meta_copy(module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        new = torch.empty(t.shape, dtype=target, device="meta")
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[id(t)] = new
    copied = copy.deepcopy(module, memo)
    for original, new in zip(module.modules(), copied.modules()):
        if "forward" in original.__dict__ and not isinstance(original.__dict__["forward"], functools.partial):
            # an instance-level forward is a closure over the *original* module (a LoRA attached, a webui patch):
            # on the copy it would run the real weights; the class's forward is what the structure needs
            new.__dict__.pop("forward", None)
    return copied


def model_shim(arch: str, unet: nn.Module, text_embedders: list, vae=None) -> SimpleNamespace:
    """The attributes lora_trainer.arch.model_parts and the adapters read, around meta parts."""
    shim = SimpleNamespace(model=SimpleNamespace(diffusion_model=unet), first_stage_model=vae,
                           parameterization="eps", scale_factor=1.0)
    if arch == "sdxl":
        shim.conditioner = SimpleNamespace(embedders=list(text_embedders))
    else:
        shim.cond_stage_model = text_embedders[0]
    return shim


def meta_copy_of_model(model, arch: str, with_text: bool) -> SimpleNamespace:
    from ..arch import model_parts

    parts = model_parts(model, arch)
    if arch == "sdxl":
        embedders = list(model.conditioner.embedders)
    else:
        embedders = [model.cond_stage_model]
    if with_text:
        embedders = [meta_copy(e) for e in embedders]
    return model_shim(arch, meta_copy(parts.unet), embedders, meta_copy(parts.vae))


# ---- from an architecture name ----------------------------------------------------------------------------------
def meta_model(arch: str, dtype: torch.dtype = torch.float16) -> SimpleNamespace:
    from ..testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    with torch.device("meta"):
        if arch == "sdxl":
            from ..testing.sgm_layout import UNetModel
            from ..testing.tiny_sdxl import SDXL_FULL, SIZE_EMBED_DIM

            c = SDXL_FULL
            unet = UNetModel(in_channels=4, model_channels=c["model_channels"], out_channels=4, num_res_blocks=2,
                             attention_resolutions=[4, 2], channel_mult=c["channel_mult"],
                             num_head_channels=c["num_head_channels"], transformer_depth=c["transformer_depth"],
                             context_dim=c["te1_width"] + c["te2_width"],
                             adm_in_channels=c["te2_width"] + 6 * SIZE_EMBED_DIM)
            text = [_hf_clip(c["te1_width"], c["te1_layers"], c["te1_heads"], layer="hidden"),
                    _open_clip(c["te2_width"], c["te2_layers"], c["te2_heads"])]
        else:
            from ldm.modules.diffusionmodules.openaimodel import UNetModel

            from ..testing.tiny_sd import tiny_unet_params

            v2 = arch != "sd1"
            unet = UNetModel(**tiny_unet_params(context_dim=1024 if v2 else 768, v2=v2, full=True))
            text = [_open_clip(1024, 24, 16) if v2 else _hf_clip(768, 12, 12, layer="last")]
        vae = _vae()
    for part in [unet, vae] + text:
        part.to(dtype)
    shim = model_shim(arch, unet, text, vae)
    if arch == "sd2v":
        shim.parameterization = "v"
    return shim


class _TextEmbedder(nn.Module):
    """Just what lora_trainer.arch.parts and adapters/text.py read from an ldm/sgm embedder."""


def _hf_clip(width: int, layers: int, heads: int, layer: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..testing.text_encoders import TINY_CLIP_TEXT_CONFIG
    from ..testing.tokenizer import tiny_cache_dir, write_clip_tokenizer

    config = dict(TINY_CLIP_TEXT_CONFIG, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=width * 4, projection_dim=width)
    emb = _TextEmbedder()
    emb.transformer = CLIPTextModel(CLIPTextConfig(**config))
    folder = tiny_cache_dir() / "plan-tokenizer"
    if not (folder / "merges.txt").exists():
        write_clip_tokenizer(folder)
    from transformers import CLIPTokenizer

    emb.tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    emb.layer, emb.layer_idx = layer, layers - 1
    return emb


def _open_clip(width: int, layers: int, heads: int):
    from open_clip.model import CLIP

    emb = _TextEmbedder()
    emb.model = CLIP(embed_dim=width, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                                   "patch_size": 16},
                     text_cfg={"context_length": 77, "vocab_size": 49408, "width": width, "heads": heads,
                               "layers": layers})
    emb.model.visual = None  # not used for text conditioning
    emb.layer = "penultimate"
    return emb



def _vae():
    from ldm.models.autoencoder import AutoencoderKL

    from ..testing.tiny_sd import FULL_VAE_DDCONFIG

    return AutoencoderKL(ddconfig=FULL_VAE_DDCONFIG, lossconfig={"target": "torch.nn.Identity"}, embed_dim=4)
