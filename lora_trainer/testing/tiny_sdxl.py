"""An SDXL-shaped `DiffusionEngine` as the webui holds it: `model.diffusion_model` (sgm UNet layout),
`conditioner.embedders[0..4]` (HF CLIP, OpenCLIP with pooled output, three size embedders),
`first_stage_model` (ldm AutoencoderKL) and the attributes the webui's `sd_models_xl.extend_sdxl` adds
(`alphas_cumprod`, `parameterization`, `apply_model`, `get_learned_conditioning`).

`SDXL_TINY` shrinks every width; `SDXL_FULL` is the real SDXL base config (for benchmarks).
"""

from __future__ import annotations

import torch
from torch import nn

from .randomize import randomize_
from .text_encoders import register_tiny_open_clip, tiny_clip_text_dir
from .tiny_sd import FULL_VAE_DDCONFIG, TINY_VAE_DDCONFIG

SDXL_TINY = dict(
    model_channels=32, channel_mult=[1, 2, 2], num_head_channels=16, transformer_depth=[0, 1, 2],
    te1_width=32, te1_layers=3, te1_heads=4, te2_width=32, te2_layers=3, te2_heads=4, vae=TINY_VAE_DDCONFIG,
)
SDXL_FULL = dict(  # sd_xl_base.yaml
    model_channels=320, channel_mult=[1, 2, 4], num_head_channels=64, transformer_depth=[0, 2, 10],
    te1_width=768, te1_layers=12, te1_heads=12, te2_width=1280, te2_layers=32, te2_heads=20,
    vae=FULL_VAE_DDCONFIG,
)
SIZE_EMBED_DIM = 256


class TinyDiffusionEngine(nn.Module):
    def __init__(self, cfg: dict, v_prediction: bool = False):
        super().__init__()
        from ldm.models.autoencoder import AutoencoderKL

        from .sgm_conditioner import (
            ConcatTimestepEmbedderND,
            FrozenCLIPEmbedder,
            FrozenOpenCLIPEmbedder2,
            GeneralConditioner,
        )
        from .sgm_layout import OpenAIWrapper, UNetModel

        # te1_dir / te2_arch: given by the checkpoint loader (lora_trainer/checkpoint), which sizes them from a file
        te1_dir = cfg.get("te1_dir") or tiny_clip_text_dir(cfg["te1_width"], cfg["te1_layers"], cfg["te1_heads"],
                                                           cfg["te1_width"] * 4)
        te1 = FrozenCLIPEmbedder(str(te1_dir),
                                 layer="hidden", layer_idx=cfg["te1_layers"] - 1)
        arch = cfg.get("te2_arch") or register_tiny_open_clip(
            f"lora-trainer-sdxl-te2-{cfg['te2_width']}-{cfg['te2_layers']}", width=cfg["te2_width"],
            layers=cfg["te2_layers"], heads=cfg["te2_heads"], embed_dim=cfg["te2_width"])
        te2 = FrozenOpenCLIPEmbedder2(arch)
        self.conditioner = GeneralConditioner([
            (te1, "txt"), (te2, "txt"),
            (ConcatTimestepEmbedderND(SIZE_EMBED_DIM), "original_size_as_tuple"),
            (ConcatTimestepEmbedderND(SIZE_EMBED_DIM), "crop_coords_top_left"),
            (ConcatTimestepEmbedderND(SIZE_EMBED_DIM), "target_size_as_tuple"),
        ])
        context_dim = cfg["te1_width"] + cfg["te2_width"]
        adm_in = cfg["te2_width"] + 3 * 2 * SIZE_EMBED_DIM  # pooled + 3 size pairs: 2816 for real SDXL
        unet = UNetModel(in_channels=4, model_channels=cfg["model_channels"], out_channels=4, num_res_blocks=2,
                         attention_resolutions=[4, 2], channel_mult=cfg["channel_mult"],
                         num_head_channels=cfg["num_head_channels"], transformer_depth=cfg["transformer_depth"],
                         context_dim=context_dim, adm_in_channels=adm_in)
        self.model = OpenAIWrapper(unet)
        self.first_stage_model = AutoencoderKL(ddconfig=cfg["vae"], lossconfig={"target": "torch.nn.Identity"},
                                               embed_dim=4)
        for p in self.first_stage_model.parameters():
            p.requires_grad = False
        self.scale_factor = 0.13025
        from .sgm_denoiser import DiscreteDenoiser

        self.denoiser = DiscreteDenoiser(v_prediction)  # v-prediction SDXL checkpoints: sgm VScaling
        self.parameterization = "v" if v_prediction else "eps"  # what the webui's extend_sdxl sets from it
        self.loss_fn = None
        self.conditioning_key = "crossattn"
        self.cond_stage_key = "txt"
        # linear-in-sqrt schedule 0.00085..0.012, 1000 steps (sgm LegacyDDPMDiscretization), as fp32
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float(), persistent=False)

    @torch.no_grad()
    def encode_first_stage(self, x):
        return self.scale_factor * self.first_stage_model.encode(x).sample()

    def get_first_stage_encoding(self, z):
        return z  # SDXL: encode_first_stage already scaled (webui behaviour)

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)

    def apply_model(self, x, t, cond):
        return self.model(x, t, cond)

    def get_learned_conditioning(self, prompts, width=1024, height=1024):
        n = len(prompts)
        device = self.alphas_cumprod.device
        size = torch.tensor([[height, width]] * n, device=device, dtype=torch.float32)
        return self.conditioner({
            "txt": list(prompts), "original_size_as_tuple": size,
            "crop_coords_top_left": torch.zeros_like(size), "target_size_as_tuple": size,
        })


def build_tiny_sdxl(seed: int = 0, cfg: dict | None = None, v_prediction: bool = False) -> TinyDiffusionEngine:
    torch.manual_seed(seed)
    model = TinyDiffusionEngine(cfg or SDXL_TINY, v_prediction)
    randomize_(model.model, seed)
    randomize_(model.conditioner, seed + 1)
    randomize_(model.first_stage_model, seed + 2)
    return model.eval()
