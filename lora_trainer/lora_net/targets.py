"""Find the layers a kohya LoRA trains on the webui's live model, by module path and attributes.

ldm/sgm class names differ from the diffusers ones kohya matches on (kohya-lora-format.md §7), and the webui may
swap classes (optimised attention, Forge-like patches), so containers are recognised by the attributes they have:
a SpatialTransformer has `proj_in`, `proj_out`, `transformer_blocks`; a ResBlock `in_layers`, `out_layers`,
`emb_layers`, `skip_connection`; a Downsample a conv `op`; an Upsample a conv `conv` and `use_conv`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..arch import TextEncoderPart
from .naming import HF_CLIP_LEAVES, hf_clip_lora_name, open_clip_lora_names, unet_lora_name

TRANSFORMER_LEAF = re.compile(
    r"proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2)")
RESBLOCK_LEAVES = ("in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection")


@dataclass
class Target:
    kind: str  # "linear", "conv" or "mha"
    path: str  # path inside the part (UNet: under model.diffusion_model; TE: under the part's root)
    module: nn.Module
    names: list  # kohya names: one, or q, k, v, out for "mha"
    part: str  # "unet" or the text encoder's prefix ("lora_te", "lora_te1", "lora_te2")

    @property
    def is_spatial_conv(self) -> bool:
        """3×3 (non-1×1) convs take conv_rank/conv_alpha; Linear and 1×1 take rank/alpha (kohya create_modules)."""
        return self.kind == "conv" and tuple(self.module.kernel_size) != (1, 1)


def _submodule(module: nn.Module, path: str):
    for attr in path.split("."):
        module = getattr(module, attr, None)
        if module is None:
            return None
    return module


def _has(module: nn.Module, *attrs: str) -> bool:
    return all(hasattr(module, attr) for attr in attrs)


def is_linear(module) -> bool:
    """nn.Linear, or a Linear that only looks like one: Forge's `ForgeOperations.Linear` is a bare nn.Module with
    `in_features`, `out_features`, a 2-D `weight` and `forward(x)` = F.linear (backend/operations.py)."""
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    return (isinstance(module, nn.Module) and type(module).__name__ == "Linear" and isinstance(weight, nn.Parameter)
            and weight.dim() == 2 and hasattr(module, "in_features") and hasattr(module, "out_features"))


def _layer_target(arch: str, path: str, module) -> Target | None:
    if is_linear(module):
        return Target("linear", path, module, [unet_lora_name(arch, path)], "unet")
    if isinstance(module, nn.Conv2d):
        return Target("conv", path, module, [unet_lora_name(arch, path)], "unet")
    return None  # e.g. an Identity skip connection or an AvgPool Downsample


def unet_targets(unet: nn.Module, arch: str, include_conv: bool = False) -> list:
    """Attention-side targets inside every SpatialTransformer; with include_conv also ResBlock and sampler convs."""
    found = []
    for path, module in unet.named_modules():
        candidates = []
        if _has(module, "proj_in", "proj_out", "transformer_blocks"):
            candidates = [(leaf, child) for leaf, child in module.named_modules() if TRANSFORMER_LEAF.fullmatch(leaf)]
        elif include_conv and _has(module, "in_layers", "out_layers", "emb_layers", "skip_connection"):
            candidates = [(leaf, _submodule(module, leaf)) for leaf in RESBLOCK_LEAVES]
        elif include_conv and isinstance(getattr(module, "op", None), nn.Conv2d):
            candidates = [("op", module.op)]
        elif include_conv and isinstance(getattr(module, "conv", None), nn.Conv2d) and hasattr(module, "use_conv"):
            candidates = [("conv", module.conv)]
        for leaf, child in candidates:
            target = _layer_target(arch, f"{path}.{leaf}", child)
            if target is not None:
                found.append(target)
    return found


def text_encoder_targets(part: TextEncoderPart) -> list:
    """Six targets per layer (HF CLIP q/k/v/out, fc1, fc2); OpenCLIP: one fused "mha" target + c_fc + c_proj."""
    found = []
    for layer in range(part.num_layers):
        if part.kind == "hf_clip":
            for leaf in HF_CLIP_LEAVES:
                path = f"text_model.encoder.layers.{layer}.{leaf}"
                found.append(Target("linear", path, _require(part, path, nn.Linear),
                                    [hf_clip_lora_name(part.prefix, layer, leaf)], part.prefix))
        else:
            names = open_clip_lora_names(part.prefix, layer)
            block = f"resblocks.{layer}"
            found.append(Target("mha", f"{block}.attn", _require(part, f"{block}.attn", nn.MultiheadAttention),
                                [names[role] for role in ("q", "k", "v", "out")], part.prefix))
            for leaf in ("c_fc", "c_proj"):
                path = f"{block}.mlp.{leaf}"
                found.append(Target("linear", path, _require(part, path, nn.Linear), [names[leaf]], part.prefix))
    return found


def _require(part: TextEncoderPart, path: str, cls: type) -> nn.Module:
    module = _submodule(part.root, path)
    if not (is_linear(module) if cls is nn.Linear else isinstance(module, cls)):
        raise ValueError(f"text encoder {part.prefix}: expected {cls.__name__} at {path!r}, "
                         f"found {type(module).__name__}")
    return module
