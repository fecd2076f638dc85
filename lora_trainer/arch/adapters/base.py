"""What the training loop needs from a model, whatever its architecture.

An adapter only *reads* the model object it is given (the webui's `shared.sd_model`): no weights are loaded,
copied or converted. The one exception is a temporary fp32 retry of an fp16 VAE that produced NaN latents,
which is undone before `encode_images` returns (fp16 -> fp32 -> fp16 is lossless).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..parts import ModelParts
from .text import TextConditioning

logger = logging.getLogger(__name__)

NATIVE_RESOLUTION = {"sd1": 512, "sd2": 512, "sd2v": 768, "sdxl": 1024}


@dataclass
class SizeConditioning:
    """SDXL micro-conditioning per sample, each [B, 2] as (h, w) / (top, left) — kohya §4.5, diffusers convention."""

    original_size_hw: torch.Tensor
    crop_top_left: torch.Tensor
    target_size_hw: torch.Tensor


class ModelAdapter:
    arch: str = ""
    uses_size_conditioning = False

    def __init__(self, model, parts: ModelParts):
        self.model = model
        self.parts = parts
        self.unet = parts.unet
        self.vae = parts.vae
        self.text_encoders = parts.text_encoders

    # ---- facts ------------------------------------------------------------------------------------------------
    @property
    def root_module(self) -> torch.nn.Module:
        """One nn.Module over every part (the restore guard walks it, the base is frozen through it)."""
        return self.model

    @property
    def prediction_type(self) -> str:
        """"epsilon" or "v", from the loaded model. sgm (SDXL) knows it from its denoiser's scaling class, which is
        what the webui's `extend_sdxl` reads to set `parameterization` (a bare sgm model has no `parameterization`);
        ldm (SD1/SD2) has `parameterization` itself."""
        scaling = getattr(getattr(self.model, "denoiser", None), "scaling", None)
        if scaling is not None:
            # the webui: isinstance(model.denoiser.scaling, VScaling) (by name: sgm may not be importable here)
            return "v" if any(c.__name__ == "VScaling" for c in type(scaling).__mro__) else "epsilon"
        return "v" if getattr(self.model, "parameterization", "eps") == "v" else "epsilon"

    @property
    def native_resolution(self) -> int:
        return NATIVE_RESOLUTION[self.arch]

    @property
    def scale_factor(self) -> float:
        return float(self.model.scale_factor)

    @property
    def unet_device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def unet_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def lowvram(self) -> bool:
        """The webui's --medvram/--lowvram: parts are moved to the GPU by hooks only while they run."""
        return bool(getattr(self.model, "lowvram", False))

    def alphas_cumprod(self, device) -> torch.Tensor:
        """ᾱ_t, fp32, 1000 values. The webui may swap `alphas_cumprod` for a downcast / zero-terminal-SNR copy
        before sampling; `alphas_cumprod_original` keeps the training schedule."""
        acp = getattr(self.model, "alphas_cumprod_original", None)
        if acp is None:
            acp = self.model.alphas_cumprod
        return acp.detach().to(device=device, dtype=torch.float32)

    def vae_fingerprint(self) -> str:
        """Keys the latent cache: arch + scale + a hash of a few VAE weights (another VAE -> other latents)."""
        digest = hashlib.sha1(f"{self.arch}:{self.scale_factor}".encode())
        params = list(self.vae.parameters())
        for p in params[:2] + params[len(params) // 2:len(params) // 2 + 1] + params[-2:]:
            digest.update(p.detach().flatten()[:4096].to("cpu", torch.float32).numpy().tobytes())
        return f"{self.arch}-{digest.hexdigest()[:16]}"

    # ---- latents ----------------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, device=None) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> scaled latents [B, 4, H/8, W/8] (a sample of the posterior, like kohya),
        fp32. Runs without autocast in the VAE's own dtype; an fp16 VAE that overflows is retried in fp32."""
        vae_param = next(self.vae.parameters())
        target = torch.device(device) if (device is not None and self.lowvram) else vae_param.device
        with torch.no_grad():
            latents = self._encode(images, target, vae_param.dtype)
            if not torch.isfinite(latents).all() and vae_param.dtype in (torch.float16, torch.bfloat16):
                logger.warning("the %s VAE produced NaN latents; encoding again in fp32", vae_param.dtype)
                originals = [(t, t.dtype) for t in list(self.vae.parameters()) + list(self.vae.buffers())]
                self.vae.float()
                try:
                    latents = self._encode(images, target, torch.float32)
                finally:
                    for tensor, dtype in originals:  # per tensor: a mixed-dtype VAE comes back exactly
                        tensor.data = tensor.data.to(dtype)
        return latents.float()

    def _encode(self, images, device, dtype):
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            out = self.vae.encode(images.to(device=device, dtype=dtype))
        out = getattr(out, "latent_dist", out)  # diffusers-style output, for completeness
        if hasattr(out, "sample"):  # ldm DiagonalGaussianDistribution; sgm's wrapper already samples
            out = out.sample()
        return out.float() * self.scale_factor

    # ---- text -------------------------------------------------------------------------------------------------
    def encode_text(self, captions: List[str], clip_skip: int = 1, prompts=None, embeddings=None) -> TextConditioning:
        """[B, 77 × chunks, D] context as the webui encodes each caption as a prompt. `prompts`: a
        lora_trainer.prompts.PromptOptions (chunk limit, emphasis); `embeddings`: the textual-inversion lookup
        described in lora_trainer/prompts/__init__.py."""
        raise NotImplementedError

    # ---- denoiser ---------------------------------------------------------------------------------------------
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: TextConditioning,
                sizes: Optional[SizeConditioning] = None) -> torch.Tensor:
        """The UNet's output (eps or v, per `prediction_type`) for noisy latents at DDPM timesteps 0..999."""
        raise NotImplementedError

    def diffusion_wrapper(self):
        """`model.model` (ldm DiffusionWrapper / sgm OpenAIWrapper) when it wraps our UNet: calling it instead of
        the bare UNet runs the forward pre-hook the webui's --medvram puts there to bring the UNet to the GPU."""
        wrapper = getattr(self.model, "model", None)
        return wrapper if getattr(wrapper, "diffusion_model", None) is self.unet else None

    def wake(self, *modules) -> None:
        """--medvram/--lowvram park parts on the CPU and move one to the GPU from a forward pre-hook when it is
        called. We call the parts' pieces directly, so run those hooks (the webui's own `send_me_to_gpu`) first."""
        if not self.lowvram:
            return
        for module in modules:
            if isinstance(module, torch.nn.Module):
                for hook in list(module._forward_pre_hooks.values()):
                    hook(module, ())

    def begin_training(self) -> None:
        """Per-instance changes the model needs to be trained (undone by end_training); none for ldm/sgm."""

    def end_training(self) -> None:
        """Undo begin_training(); safe to repeat and after a partial begin."""

    def text_encoder_modules(self) -> list:
        """The modules to freeze / put in eval / checkpoint, one per text encoder."""
        return [part.root for part in self.text_encoders]
