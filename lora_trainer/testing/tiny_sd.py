"""Tiny SD1 / SD2 / SD2-v models: ldm `LatentDiffusion` built from a config shaped like the webui's
`v1-inference.yaml` / `v2-inference(-v).yaml`, with every size shrunk.

The UNet keeps real SD's block layout (4 levels, 2 res blocks each, attention on the first three), so its module
paths (`input_blocks.{1+3i+j}`, `output_blocks.{3i+j}`) and LoRA module counts are those of a real SD1/SD2 UNet.
"""

from __future__ import annotations

import torch

from .randomize import randomize_
from .text_encoders import register_tiny_open_clip, tiny_clip_text_dir

TINY_VAE_DDCONFIG = dict(
    double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3,
    ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
)  # 3 downsamplings: 8x, like SD's VAE


FULL_VAE_DDCONFIG = dict(TINY_VAE_DDCONFIG, resolution=256, ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2)


def tiny_unet_params(context_dim: int, v2: bool, full: bool = False) -> dict:
    params = dict(
        image_size=8, in_channels=4, out_channels=4, model_channels=320 if full else 32,
        attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4] if full else [1, 1, 2, 2],
        transformer_depth=1, context_dim=context_dim, use_spatial_transformer=True,
        use_checkpoint=False, legacy=False,
    )
    if v2:
        # SD2: 64-channel heads, linear projections
        params.update(num_head_channels=64 if full else 16, use_linear_in_transformer=True)
    else:
        params.update(num_heads=8)
    return params


def tiny_sd_config(v2: bool, v_prediction: bool, full: bool = False) -> dict:
    """full=True: the real v1-inference.yaml / v2-inference(-v).yaml sizes (random weights, for benchmarks)."""
    if v2:
        te = dict(width=1024, layers=24, heads=16, embed_dim=1024) if full else {}
        cond = {
            "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
            "params": {"arch": register_tiny_open_clip(f"lora-trainer-sd2-text-{'full' if full else 'tiny'}", **te),
                       "version": None,
                       "device": "cpu", "freeze": True, "layer": "penultimate"},
        }
    else:
        cond = {
            "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
            "params": {"version": str(tiny_clip_text_dir(768, 12, 12, 3072) if full else tiny_clip_text_dir()),
                       "device": "cpu"},
        }
    params = dict(
        linear_start=0.00085, linear_end=0.0120, num_timesteps_cond=1, log_every_t=200, timesteps=1000,
        first_stage_key="jpg", cond_stage_key="txt", image_size=8, channels=4, cond_stage_trainable=False,
        conditioning_key="crossattn", monitor="val/loss_simple_ema", scale_factor=0.18215, use_ema=False,
        unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                     "params": tiny_unet_params(context_dim=(1024 if v2 else 768) if full else 32, v2=v2, full=full)},
        first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL",
                            "params": {"embed_dim": 4, "monitor": "val/rec_loss",
                                       "ddconfig": FULL_VAE_DDCONFIG if full else TINY_VAE_DDCONFIG,
                                       "lossconfig": {"target": "torch.nn.Identity"}}},
        cond_stage_config=cond,
    )
    if v_prediction:
        params["parameterization"] = "v"
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


def build_tiny_sd(v2: bool = False, v_prediction: bool = False, seed: int = 0, full: bool = False):
    from omegaconf import OmegaConf

    from .torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from ldm.util import instantiate_from_config

    config = OmegaConf.create(tiny_sd_config(v2, v_prediction, full))
    torch.manual_seed(seed)
    model = instantiate_from_config(config.model)
    randomize_(model.model, seed)
    randomize_(model.cond_stage_model, seed + 1)
    randomize_(model.first_stage_model, seed + 2)
    model.eval()
    return model
