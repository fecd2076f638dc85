"""`load_checkpoint(file)`: a single-file SD1 / SD2 / SD2-v / SDXL checkpoint as the webui's model object."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .classify import UNET_IN, classify
from .errors import CheckpointError
from .prediction import prediction_from_yaml, unet_is_v_prediction
from .read import read_state_dict, read_vae
from .shapes import clip_text_sizes, open_clip_text_sizes, unet_sizes, vae_sizes

logger = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# keys a checkpoint may lack: buffers the model computes itself, open_clip's unused logit scale
OPTIONAL_SUFFIXES = ("position_ids", "logit_scale", "attn_mask")


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    arch: str  # sd1 / sd2 / sd2v / sdxl
    dtype: torch.dtype
    prediction_source: str  # how eps/v was decided


def _build(arch: str, sd: dict, vae_sd: dict, vae_prefix: str, name: str):
    from .skeleton import build_ldm, build_sdxl

    unet = unet_sizes(sd, name)
    vae = vae_sizes(vae_sd, vae_prefix, name)
    if arch == "sdxl":
        te1 = clip_text_sizes(sd, "conditioner.embedders.0.transformer.text_model.")
        te2 = open_clip_text_sizes(sd, "conditioner.embedders.1.model.")
        return build_sdxl(unet, te1, te2, vae), unet
    if arch == "sd2":
        text = open_clip_text_sizes(sd, "cond_stage_model.model.")
    else:
        text = clip_text_sizes(sd, "cond_stage_model.transformer.text_model.")
    return build_ldm(arch, unet, text, vae, v_prediction=False), unet


def _load_weights(model, sd: dict, vae_sd: Optional[dict], name: str) -> None:
    try:
        result = model.load_state_dict(sd, strict=False)
        if vae_sd is not None:
            model.first_stage_model.load_state_dict(vae_sd, strict=True)
    except RuntimeError as exc:  # shape mismatch: the sizes were misread
        first = str(exc).split("\n")[1:3]
        raise CheckpointError(f"{name}: the weights do not fit the architecture read from their shapes "
                              f"({' '.join(s.strip() for s in first)}); an unusual or merged layout") from exc
    params = {k for k, _ in model.named_parameters()}
    missing = [k for k in result.missing_keys if k in params and not k.endswith(OPTIONAL_SUFFIXES)
               and not (vae_sd is not None and k.startswith("first_stage_model."))]
    if missing:
        raise CheckpointError(f"{name}: {len(missing)} weights are missing (e.g. {missing[0]}); the file is "
                              "partial (pruned to a part?) or not a complete SD checkpoint")
    parts = ("model.diffusion_model.", "cond_stage_model.", "conditioner.", "first_stage_model.")
    unexpected = [k for k in result.unexpected_keys if k.startswith(parts) and not k.endswith(OPTIONAL_SUFFIXES)]
    if unexpected:
        raise CheckpointError(f"{name}: {len(unexpected)} weights have no place in the architecture read from the "
                              f"file (e.g. {unexpected[0]}); an unusual or merged layout")


def choose_dtype(requested: Optional[str], checkpoint_dtype: torch.dtype, device: torch.device, log) -> torch.dtype:
    if requested and requested != "auto":
        return DTYPES[requested]
    if checkpoint_dtype not in DTYPES.values():
        return torch.float32
    if device.type == "cpu" and checkpoint_dtype == torch.float16:
        log("the checkpoint is fp16; on the CPU it is trained in fp32 (--dtype to choose)")
        return torch.float32
    return checkpoint_dtype


def load_checkpoint(path, vae: Optional[str] = None, dtype: Optional[str] = None, device="cpu",
                    prediction: Optional[str] = None, log: Callable[[str], None] = logger.info) -> LoadedCheckpoint:
    """Read `path`, detect architecture and sizes from its keys/shapes, build the webui's classes, load the
    weights (and `vae`, as the webui's VAE override does), cast to `dtype` (default: the checkpoint's) and move
    to `device`. `prediction` ("eps"/"v") overrides the SD2 v-detection. Raises CheckpointError."""
    path = Path(path).expanduser()
    name = str(path)
    sd, _metadata = read_state_dict(path)
    arch = classify(sd, name)
    checkpoint_dtype = sd[UNET_IN].dtype
    vae_sd = read_vae(vae) if vae else None
    if prediction not in (None, "auto", "eps", "v"):
        raise CheckpointError(f"--prediction {prediction}: choose eps or v")
    if prediction == "v" and arch != "sd2":
        raise CheckpointError(f"{name}: --prediction v: only SD2 v-models are supported ({arch} trains as eps)")
    model, unet = _build(arch, sd, vae_sd if vae_sd is not None else sd, "" if vae_sd is not None else
                         "first_stage_model.", name if vae_sd is None else str(vae))
    _load_weights(model, sd, vae_sd, name)
    del sd
    source = "eps (SD1/SDXL)"
    if arch == "sd2":
        yaml_choice = prediction_from_yaml(path)
        if prediction in ("eps", "v"):
            v, source = prediction == "v", "--prediction"
        elif yaml_choice is not None:
            v, source = yaml_choice == "v", f"{path.with_suffix('.yaml').name}"
        else:
            v, source = unet_is_v_prediction(model.model.diffusion_model, unet["context_dim"]), "the UNet's weights"
        if v:
            arch, model.parameterization = "sd2v", "v"  # what v2-inference-v.yaml sets; nothing else differs
        source = f"{'v' if v else 'eps'} ({source})"
    # the webui's flags (sd_models.set_model_type), and the fp32 schedule kept beside any downcast
    model.is_sd1, model.is_sd2, model.is_sdxl = arch == "sd1", arch in ("sd2", "sd2v"), arch == "sdxl"
    model.alphas_cumprod_original = model.alphas_cumprod.detach().float().clone()
    device = torch.device(device)
    target = choose_dtype(dtype, checkpoint_dtype, device, log)
    model.to(dtype=target)
    if hasattr(model.model.diffusion_model, "dtype"):
        model.model.diffusion_model.dtype = target
    model.to(device).eval()
    model.requires_grad_(False)
    log(f"loaded {path.name}: {arch}, {str(target).replace('torch.', '')}, prediction {source}"
        + (f", VAE from {Path(vae).name}" if vae else ""))
    return LoadedCheckpoint(model, arch, target, source)
