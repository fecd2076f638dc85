"""Architecture sizes read from a state dict's keys and shapes, so a full-size and a tiny checkpoint load alike.

Shapes fix every width, depth and layout; they do not fix attention head counts. Those follow the real models
(SD1 UNet: 8 heads; SD2/SDXL UNet: 64-channel heads; CLIP/OpenCLIP text towers: 64-channel heads), and for narrower
test models the project's tiny builders' convention (UNet heads of model_channels/2 channels, text heads of 8).
"""

from __future__ import annotations

import re
from typing import Dict, List

import torch

from .errors import CheckpointError

P = "model.diffusion_model."


def _count(sd: Dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def text_heads(width: int) -> int:
    return width // 64 if width >= 256 and width % 64 == 0 else max(1, width // 8)


def unet_head_channels(model_channels: int) -> int:
    return min(64, model_channels // 2)


def unet_sizes(sd: Dict[str, torch.Tensor], name: str) -> dict:
    """model_channels, channel_mult, num_res_blocks, attention_resolutions, per-level transformer depth,
    middle depth, context_dim, use_linear, adm_in_channels (SDXL) from `model.diffusion_model.*`."""
    mc = sd[P + "input_blocks.0.0.weight"].shape[0]
    n_in = _count(sd, re.escape(P) + r"input_blocks\.(\d+)\.")
    mult: List[int] = []
    depth: List[int] = []
    res_per_level: List[int] = []
    attention, ds, level_res = [], 1, 0
    for i in range(1, n_in):
        block = f"{P}input_blocks.{i}."
        if block + "0.op.weight" in sd:  # Downsample: next level
            res_per_level.append(level_res)
            level_res, ds = 0, ds * 2
            continue
        out = sd.get(block + "0.out_layers.3.weight")
        if out is None:
            raise CheckpointError(f"{name}: unexpected UNet layout at input_blocks.{i}")
        if level_res == 0:
            mult.append(out.shape[0] // mc)
            d = _count(sd, re.escape(block) + r"1\.transformer_blocks\.(\d+)\.")
            depth.append(d)
            if d and ds not in attention:
                attention.append(ds)
        level_res += 1
    res_per_level.append(level_res)
    if len(set(res_per_level)) != 1:
        raise CheckpointError(f"{name}: the UNet levels have different res-block counts {res_per_level}")
    k = next((k for k in sd if k.startswith(P) and k.endswith("attn2.to_k.weight")), None)
    if k is None:
        raise CheckpointError(f"{name}: the UNet has no cross-attention layers")
    proj = next(sd[k] for k in sd if k.startswith(P) and k.endswith(".proj_in.weight"))
    adm = sd.get(P + "label_emb.0.0.weight")
    return dict(model_channels=mc, channel_mult=mult, num_res_blocks=res_per_level[0], attention_resolutions=attention,
                transformer_depth=depth, middle_depth=_count(sd, re.escape(P) + r"middle_block\.1\.transformer_blocks"
                                                                         r"\.(\d+)\."),
                context_dim=sd[k].shape[1], use_linear=proj.ndim == 2,
                adm_in_channels=None if adm is None else adm.shape[1])


def clip_text_sizes(sd: Dict[str, torch.Tensor], prefix: str) -> dict:
    """HF CLIPTextModel config (`prefix` = '...transformer.text_model.')."""
    emb = sd[prefix + "embeddings.token_embedding.weight"]
    hidden = emb.shape[1]
    layers = _count(sd, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    return dict(vocab_size=emb.shape[0], hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=text_heads(hidden),
                intermediate_size=sd[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0],
                max_position_embeddings=sd[prefix + "embeddings.position_embedding.weight"].shape[0])


def open_clip_text_sizes(sd: Dict[str, torch.Tensor], prefix: str) -> dict:
    """open_clip text_cfg + embed_dim (`prefix` = '...model.')."""
    emb = sd[prefix + "token_embedding.weight"]
    width = emb.shape[1]
    proj = sd.get(prefix + "text_projection")
    return dict(width=width, layers=_count(sd, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."),
                heads=text_heads(width), vocab_size=emb.shape[0],
                context_length=sd[prefix + "positional_embedding"].shape[0],
                mlp_ratio=sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
                embed_dim=width if proj is None else proj.shape[1])


def vae_sizes(sd: Dict[str, torch.Tensor], prefix: str, name: str) -> dict:
    """ldm AutoencoderKL ddconfig + embed_dim (`prefix` = 'first_stage_model.' or '')."""
    if prefix + "encoder.conv_in.weight" not in sd:
        raise CheckpointError(f"{name}: no VAE (first_stage_model.*) in this file; pass one with --vae")
    ch = sd[prefix + "encoder.conv_in.weight"].shape[0]
    levels = _count(sd, re.escape(prefix) + r"encoder\.down\.(\d+)\.")
    mult = [sd[f"{prefix}encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)]
    blocks = _count(sd, re.escape(prefix) + r"encoder\.down\.0\.block\.(\d+)\.")
    z2 = sd[prefix + "encoder.conv_out.weight"].shape[0]
    attn = prefix + "encoder.down.{}.attn.0.q.weight"
    res = 256
    attn_res = [res // 2**i for i in range(levels) if attn.format(i) in sd]
    return dict(ddconfig=dict(double_z=True, z_channels=z2 // 2, resolution=res, in_channels=3,
                              out_ch=sd[prefix + "decoder.conv_out.weight"].shape[0], ch=ch, ch_mult=mult,
                              num_res_blocks=blocks, attn_resolutions=attn_res, dropout=0.0),
                embed_dim=sd[prefix + "quant_conv.weight"].shape[0] // 2)
