"""Where the trainable parts of each architecture live, on a bare ldm/sgm model and on the webui's wrapped one.

Text-encoder naming follows kohya (kohya-lora-format.md §7): SD1/SD2 use prefix `lora_te`, SDXL `lora_te1`/`lora_te2`.
OpenCLIP towers (SD2, SDXL TE2) hold fused q/k/v in `nn.MultiheadAttention`. SD2 runs the penultimate layer, so its
last resblock never runs and kohya gives it no LoRA; SDXL TE2's last block does run (it feeds the pooled vector).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .detect import _unwrap, detect_arch


@dataclass
class TextEncoderPart:
    prefix: str  # kohya key prefix: "lora_te", "lora_te1", "lora_te2"
    kind: str  # "hf_clip" (transformers CLIPTextModel) or "open_clip"
    embedder: nn.Module  # the ldm/sgm embedder (unwrapped from the webui's hijack wrapper)
    root: nn.Module  # HF: CLIPTextModel (names "text_model.encoder.layers.N..."); open_clip: model.transformer
    num_layers: int  # layers that get LoRA modules


@dataclass
class ModelParts:
    arch: str
    unet: nn.Module  # model.model.diffusion_model
    text_encoders: list  # [TextEncoderPart]
    vae: nn.Module  # first_stage_model


def _hf_part(prefix: str, embedder) -> TextEncoderPart:
    root = embedder.transformer
    return TextEncoderPart(prefix, "hf_clip", embedder, root, len(root.text_model.encoder.layers))


def _open_clip_part(prefix: str, embedder, skip_last: bool) -> TextEncoderPart:
    root = embedder.model.transformer
    n = len(root.resblocks) - (1 if skip_last else 0)
    return TextEncoderPart(prefix, "open_clip", embedder, root, n)


def model_parts(model, arch: str | None = None) -> ModelParts:
    arch = arch or detect_arch(model)
    if hasattr(model, "forge_objects"):
        from .forge import forge_parts

        return forge_parts(model, arch)
    if arch == "sdxl":
        embedders = model.conditioner.embedders
        tes = [_hf_part("lora_te1", _unwrap(embedders[0])), _open_clip_part("lora_te2", _unwrap(embedders[1]), False)]
    elif arch == "sd1":
        tes = [_hf_part("lora_te", _unwrap(model.cond_stage_model))]
    else:
        tes = [_open_clip_part("lora_te", _unwrap(model.cond_stage_model), True)]
    return ModelParts(arch, model.model.diffusion_model, tes, model.first_stage_model)
