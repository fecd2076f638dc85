"""Which architecture a checkpoint's state dict holds, decided from its keys as the webui's
`guess_model_config_from_state_dict` does, and refusing clearly what cannot be trained here."""

from __future__ import annotations

from typing import Dict

import torch

from .errors import CheckpointError

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD2_TE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SD1_TE = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SDXL_TE2 = "conditioner.embedders.1.model.ln_final.weight"
BASE_ONLY = ("train on the matching base checkpoint instead (the LoRA works on both)")


def _refuse_non_checkpoints(sd: Dict[str, torch.Tensor], name: str) -> None:
    keys = list(sd)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_transformer_")) or ".lora_down." in k or ".lora_A." in k
           for k in keys[:2000]):
        raise CheckpointError(f"{name}: this is a LoRA file, not a checkpoint; pass it as network_weights to start "
                              "from it, and give --checkpoint the model it was trained on")
    if "encoder.conv_in.weight" in sd or ("first_stage_model.encoder.conv_in.weight" in sd and UNET_IN not in sd):
        raise CheckpointError(f"{name}: this is a VAE only; pass it as --vae, and give --checkpoint a full model")
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        raise CheckpointError(f"{name}: a Flux checkpoint; only SD1, SD2 and SDXL base checkpoints are supported")
    if any(k.startswith(("model.diffusion_model.joint_blocks.", "joint_blocks.")) for k in keys) or \
            "model.diffusion_model.x_embedder.proj.weight" in sd:
        raise CheckpointError(f"{name}: an SD3 checkpoint; only SD1, SD2 and SDXL base checkpoints are supported")
    if UNET_IN not in sd:
        if any(k.startswith(("down_blocks.", "unet.", "text_encoder.")) for k in keys):
            raise CheckpointError(f"{name}: a diffusers-format file; use the single-file .safetensors checkpoint")
        raise CheckpointError(f"{name}: no UNet (model.diffusion_model.*) in this file: not a single-file SD "
                              "checkpoint, or a truncated/partial one")


def classify(sd: Dict[str, torch.Tensor], name: str = "checkpoint") -> str:
    """'sd1', 'sd2' (eps or v: decided later, see prediction.py) or 'sdxl'."""
    _refuse_non_checkpoints(sd, name)
    in_channels = sd[UNET_IN].shape[1]
    if SDXL_TE2 in sd:
        if in_channels != 4:
            raise CheckpointError(f"{name}: an SDXL inpainting checkpoint ({in_channels} UNet input channels); "
                                  f"{BASE_ONLY}")
        return "sdxl"
    if "conditioner.embedders.0.model.ln_final.weight" in sd:
        raise CheckpointError(f"{name}: an SDXL refiner; LoRAs are trained on the SDXL base model")
    if any(k.startswith("depth_model.") for k in sd):
        raise CheckpointError(f"{name}: an SD2 depth model; {BASE_ONLY}")
    if "embedder.model.ln_final.weight" in sd:
        raise CheckpointError(f"{name}: an SD2 unCLIP model; {BASE_ONLY}")
    if in_channels == 9:
        raise CheckpointError(f"{name}: an inpainting checkpoint (9 UNet input channels); {BASE_ONLY}")
    if in_channels == 8:
        raise CheckpointError(f"{name}: an instruct-pix2pix checkpoint (8 UNet input channels); {BASE_ONLY}")
    if in_channels != 4:
        raise CheckpointError(f"{name}: the UNet takes {in_channels} input channels; a base SD model takes 4")
    if SD2_TE in sd:
        return "sd2"
    if SD1_TE in sd:
        return "sd1"
    if any(k.startswith("cond_stage_model.roberta.") for k in sd):
        raise CheckpointError(f"{name}: an AltDiffusion checkpoint; only SD1, SD2 and SDXL are supported")
    raise CheckpointError(f"{name}: no text encoder found (cond_stage_model.* / conditioner.embedders.*): a "
                          "UNet-only or partial checkpoint")
