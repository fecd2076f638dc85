"""sgm's SDXL module layout, assembled from the real ldm leaf classes.

The webui runs SDXL on Stability-AI's `sgm` (generative-models), which is not on PyPI. Its UNet is ldm's with three
additions, reproduced here from sgm's `openaimodel.UNetModel` / `attention.SpatialTransformer` /
`encoders.modules`: a "sequential" `label_emb` for the 2816-wide size+pooled vector, a per-level transformer depth,
and SpatialTransformers whose blocks share one context. The leaves (ResBlock, SpatialTransformer blocks,
CrossAttention, Downsample, Upsample, AutoencoderKL) are ldm's own classes, so module paths, parameter names and
shapes match an SDXL checkpoint loaded by the webui (`model.diffusion_model.*`, `conditioner.embedders.N.*`).
"""

from __future__ import annotations

import torch
from torch import nn

from .torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

from ldm.modules.attention import SpatialTransformer as _LdmSpatialTransformer  # noqa: E402
from ldm.modules.diffusionmodules.openaimodel import (  # noqa: E402
    Downsample,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
)
from ldm.modules.diffusionmodules.util import (  # noqa: E402
    conv_nd,
    linear,
    normalization,
    timestep_embedding,
    zero_module,
)


class SpatialTransformer(_LdmSpatialTransformer):
    """sgm's forward: with depth > 1 every block uses the one context (ldm's indexes context[i] per block)."""

    def forward(self, x, context=None):
        if not isinstance(context, list):
            context = [context]
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, context=context[0 if len(context) == 1 else i])
        if self.use_linear:
            x = self.proj_out(x)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class UNetModel(nn.Module):
    """sgm `UNetModel` restricted to what SDXL base uses (num_classes="sequential", linear projections)."""

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult, num_head_channels, transformer_depth, context_dim, adm_in_channels,
                 use_linear_in_transformer=True):
        super().__init__()
        self.in_channels, self.model_channels, self.out_channels = in_channels, model_channels, out_channels
        self.num_classes = "sequential"
        self.dtype = torch.float32  # the webui's extend_sdxl sets this attribute too
        depth = list(transformer_depth)
        ted = model_channels * 4
        self.time_embed = nn.Sequential(linear(model_channels, ted), nn.SiLU(), linear(ted, ted))
        self.label_emb = nn.Sequential(nn.Sequential(linear(adm_in_channels, ted), nn.SiLU(), linear(ted, ted)))

        def transformer(ch, d):
            return SpatialTransformer(ch, ch // num_head_channels, num_head_channels, depth=d,
                                      context_dim=[context_dim] * d, use_linear=use_linear_in_transformer,
                                      use_checkpoint=False)  # the webui forces use_checkpoint off

        conv_in = conv_nd(2, in_channels, model_channels, 3, padding=1)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_in)])
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, ted, 0.0, out_channels=mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch, depth[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, True, dims=2, out_channels=ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ted, 0.0, out_channels=ch), transformer(ch, depth[-1]), ResBlock(ch, ted, 0.0))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), ted, 0.0, out_channels=model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch, depth[level]))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, True, dims=2, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(conv_nd(2, model_channels, out_channels, 3, padding=1)))

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        hs = []
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
        emb = emb + self.label_emb(y)
        h = x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h.type(x.dtype))


class OpenAIWrapper(nn.Module):
    """sgm `OpenAIWrapper`: `model(x, t, cond)` with cond = {"crossattn", "vector"[, "concat"]}."""

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c, **kwargs):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn"), y=c.get("vector"), **kwargs)
