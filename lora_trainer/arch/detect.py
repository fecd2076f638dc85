"""Tell SD1 / SD2 / SD2-v / SDXL apart from the model object itself (what the webui holds in `shared.sd_model`).

Structure decides, not the webui's `is_sd*` flags, so the engine works on a bare ldm/sgm model too; the flags are
only used to refuse what we cannot train (SD3). Forge's engines (`forge_objects`) are read by forge.py.
"""

from __future__ import annotations

ARCHS = ("sd1", "sd2", "sd2v", "sdxl")


class UnsupportedModel(ValueError):
    """The loaded model cannot be trained; the message says why and what to load instead."""


def _unwrap(module):
    return getattr(module, "wrapped", module)  # the webui wraps text encoders in sd_hijack classes


def detect_arch(model) -> str:
    if model is None:
        raise UnsupportedModel("No model is loaded. Load an SD1, SD2 or SDXL checkpoint first.")
    if hasattr(model, "forge_objects"):
        from .forge import detect_forge_arch

        return detect_forge_arch(model)
    if getattr(model, "is_sd3", False):
        raise UnsupportedModel("SD3 checkpoints are not supported. Load an SD1, SD2 or SDXL checkpoint.")
    if getattr(model, "conditioning_key", "crossattn") not in ("crossattn", None):
        raise UnsupportedModel(
            f"This checkpoint is an inpainting/instruct model (conditioning '{model.conditioning_key}'). "
            "Train on the matching base checkpoint instead; the LoRA will work on both.")
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    if diffusion_model is None:
        raise UnsupportedModel(f"{type(model).__name__} has no model.diffusion_model; not an ldm/sgm SD model.")
    if getattr(diffusion_model, "in_channels", 4) != 4:
        raise UnsupportedModel("The UNet does not take 4 latent channels (inpainting?); load a base checkpoint.")
    if hasattr(model, "conditioner"):
        return "sdxl"
    cond = _unwrap(getattr(model, "cond_stage_model", None))
    if cond is None:
        raise UnsupportedModel("The model has no text encoder (cond_stage_model).")
    if hasattr(cond, "model") and hasattr(cond.model, "transformer"):
        return "sd2v" if getattr(model, "parameterization", "eps") == "v" else "sd2"
    if hasattr(cond, "transformer"):
        return "sd1"
    raise UnsupportedModel(f"Unknown text encoder {type(cond).__name__}; expected CLIP (SD1) or OpenCLIP (SD2).")
