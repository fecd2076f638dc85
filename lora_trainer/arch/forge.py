"""Forge's model layout (lllyasviel/stable-diffusion-webui-forge, `backend/`), read from the engine object alone.

Forge's `shared.sd_model` is a `ForgeDiffusionEngine` (not an nn.Module) whose `forge_objects` hold patchers:
- `unet.model` is a `KModel`: `.diffusion_model` the `IntegratedUNet2DConditionModel` (ldm block names, so the
  kohya UNet names are A1111's) and `.predictor` the noise schedule (`alphas_cumprod`, `prediction_type`);
- `clip.cond_stage_model` a ModuleDict of `IntegratedCLIP`s (`clip_l`, `clip_h` for SD2, `clip_g` for SDXL), each
  holding a transformers `CLIPTextModel` as `.transformer` — SD2's ViT-H and SDXL's bigG in the HF layout, so
  their q/k/v are separate Linears and take the kohya names A1111 writes for OpenCLIP's fused attention;
- `vae.first_stage_model` the `IntegratedAutoencoderKL` (`encode` samples, `process_in` scales).
Nothing here imports Forge: everything is reached through the engine's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .detect import UnsupportedModel

# engine class name -> arch (backend/diffusion_engine/*.py); SD2 v-prediction is told apart by the predictor
ENGINE_ARCHS = {"StableDiffusion": "sd1", "StableDiffusion2": "sd2", "StableDiffusionXL": "sdxl"}
# text encoders per arch: (ModuleDict key, kohya prefix, layers that get LoRA modules or None for all).
# Forge's SD2 clip_h config has 23 layers already (OpenCLIP's last block dropped: it never runs), SDXL's clip_g 32.
TEXT_ENCODERS = {"sd1": (("clip_l", "lora_te"),), "sd2": (("clip_h", "lora_te"),),
                 "sdxl": (("clip_l", "lora_te1"), ("clip_g", "lora_te2"))}


def is_forge_engine(model) -> bool:
    return model is not None and hasattr(model, "forge_objects")


def _prediction_type(model) -> str:
    predictor = getattr(model.forge_objects.unet.model, "predictor", None)
    return getattr(predictor, "prediction_type", "epsilon")


def detect_forge_arch(model) -> str:
    objects = model.forge_objects
    if objects is None or getattr(objects, "unet", None) is None:
        raise UnsupportedModel("Forge has no checkpoint loaded yet (it loads one at the first generation): "
                               "generate one image in txt2img, then train.")
    name = type(model).__name__
    if getattr(model, "is_inpaint", False):
        raise UnsupportedModel("This checkpoint is an inpainting model. Train on the matching base checkpoint "
                               "instead; the LoRA will work on both.")
    arch = ENGINE_ARCHS.get(name)
    if arch is None:
        for flag, guess in (("is_sdxl", "sdxl"), ("is_sd2", "sd2"), ("is_sd1", "sd1")):
            if getattr(model, flag, False) and name not in ("StableDiffusionXLRefiner",):
                arch = guess
                break
    if arch is None:
        raise UnsupportedModel(f"Forge's {name} model cannot be trained here; load an SD1, SD2 or SDXL checkpoint "
                               "(Flux, SD3, Chroma and the SDXL refiner are not supported).")
    unet = getattr(objects.unet.model, "diffusion_model", None)
    if getattr(unet, "in_channels", 4) != 4:
        raise UnsupportedModel("The UNet does not take 4 latent channels (inpainting?); load a base checkpoint.")
    prediction = _prediction_type(model)
    if prediction not in ("epsilon", "eps", "v_prediction"):
        raise UnsupportedModel(f"Forge's predictor uses '{prediction}' prediction; only epsilon and v are trained.")
    if arch == "sd2" and prediction == "v_prediction":
        return "sd2v"
    if arch != "sd2" and prediction == "v_prediction":
        raise UnsupportedModel(f"{name} with v-prediction is not supported; only SD2-v trains with v targets.")
    return arch


@dataclass
class ForgeTextEncoder:
    """What encode_hf_clip reads from an ldm embedder (`transformer`, `tokenizer`), for one Forge text encoder."""

    key: str  # "clip_l", "clip_h", "clip_g"
    integrated: nn.Module  # IntegratedCLIP
    tokenizer: object

    @property
    def transformer(self) -> nn.Module:
        return self.integrated.transformer


def forge_text_encoders(model, arch: str) -> list:
    """[(prefix, ForgeTextEncoder)] in kohya order."""
    clip = model.forge_objects.clip
    found = []
    for key, prefix in TEXT_ENCODERS["sd2" if arch == "sd2v" else arch]:
        integrated = getattr(clip.cond_stage_model, key, None)
        if integrated is None or not hasattr(integrated, "transformer"):
            raise UnsupportedModel(f"Forge's text encoder '{key}' is missing; the checkpoint did not load fully.")
        found.append((prefix, ForgeTextEncoder(key, integrated, getattr(clip.tokenizer, key))))
    return found


class ForgeModules(nn.Module):
    """A container over the engine's trainable modules, so the restore guard and `requires_grad_` have one
    nn.Module to walk. It holds references only: nothing is registered on Forge's own objects."""

    def __init__(self, unet: nn.Module, text_encoders: list, vae: nn.Module):
        super().__init__()
        self.unet = unet
        self.text_encoders = nn.ModuleList(text_encoders)
        self.vae = vae


def forge_parts(model, arch: str):
    from .parts import ModelParts, TextEncoderPart

    tes = []
    for prefix, encoder in forge_text_encoders(model, arch):
        root = encoder.transformer
        tes.append(TextEncoderPart(prefix, "hf_clip", encoder, root, len(root.text_model.encoder.layers)))
    objects = model.forge_objects
    return ModelParts(arch, objects.unet.model.diffusion_model, tes, objects.vae.first_stage_model)
