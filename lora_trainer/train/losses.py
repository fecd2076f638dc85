"""Diffusion training math (kohya-lora-format.md §5.2-5.6): noise, timesteps, noisy latents, targets, loss, weights.

Pure functions on tensors, so each formula is tested on known values. ᾱ (`alphas_cumprod`) is the model's own
schedule (1000 values, fp32); timesteps are DDPM indices 0..999.
"""

from __future__ import annotations

from typing import Optional

import torch


def sample_noise(latents: torch.Tensor, generator: torch.Generator, noise_offset: float = 0.0) -> torch.Tensor:
    """randn like the latents, + noise_offset · randn(B, C, 1, 1) (a per-channel shift: learns dark/bright images).
    Drawn on the generator's device (CPU) and moved, so a seed gives the same noise on any device."""
    shape = latents.shape
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
    return noise.to(latents.device)


def sample_timesteps(batch: int, generator: torch.Generator, min_timestep: int = 0, max_timestep: int = 1000,
                     device=None) -> torch.Tensor:
    """Uniform integers in [min_timestep, max_timestep) per sample (upper bound exclusive, as kohya)."""
    t = torch.randint(min_timestep, max_timestep, (batch,), generator=generator, dtype=torch.long)
    return t.to(device) if device is not None else t


def _gather(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a.view(-1, *([1] * (ndim - 1)))


def add_noise(latents, noise, timesteps, alphas_cumprod) -> torch.Tensor:
    """q(x_t | x_0) = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε."""
    a = _gather(alphas_cumprod, timesteps, latents.ndim)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def velocity(latents, noise, timesteps, alphas_cumprod) -> torch.Tensor:
    """v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (the v-prediction target; ldm's get_v, diffusers' get_velocity)."""
    a = _gather(alphas_cumprod, timesteps, latents.ndim)
    return a.sqrt() * noise - (1 - a).sqrt() * latents


def target_for(prediction_type: str, latents, noise, timesteps, alphas_cumprod) -> torch.Tensor:
    if prediction_type == "v":
        return velocity(latents, noise, timesteps, alphas_cumprod)
    if prediction_type == "epsilon":
        return noise
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def snr(timesteps, alphas_cumprod) -> torch.Tensor:
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1 - a)


def min_snr_weight(timesteps, alphas_cumprod, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ (arXiv 2303.09556): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v."""
    s = snr(timesteps, alphas_cumprod)
    clipped = torch.clamp(s, max=gamma)
    return clipped / (s + 1) if prediction_type == "v" else clipped / s


def huber_c(timesteps, alphas_cumprod, c: float, schedule: str) -> torch.Tensor:
    """kohya's per-timestep Huber threshold: constant c; exponential exp(−α t) with α = −ln(c)/1000;
    snr (kohya's default): (1−c)/(1+σ_t)² + c with σ_t = √((1−ᾱ_t)/ᾱ_t)."""
    t = timesteps.float()
    if schedule == "constant":
        return torch.full_like(t, c)
    if schedule == "exponential":
        alpha = -torch.log(torch.tensor(c)) / 1000
        return torch.exp(-alpha * t)
    if schedule == "snr":
        a = alphas_cumprod.to(timesteps.device)[timesteps].float()
        sigma = ((1 - a) / a).sqrt()
        return (1 - c) / (1 + sigma) ** 2 + c
    raise ValueError(f"unknown huber schedule {schedule!r}")


def elementwise_loss(pred, target, loss_type: str = "l2", c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per element, fp32. huber: 2c·(√((p−t)² + c²) − c) with c per sample ([B])."""
    pred, target = pred.float(), target.float()
    if loss_type == "l2":
        return (pred - target) ** 2
    if loss_type == "huber":
        c = c.view(-1, *([1] * (pred.ndim - 1)))
        return 2 * c * (torch.sqrt((pred - target) ** 2 + c ** 2) - c)
    raise ValueError(f"unknown loss type {loss_type!r}")


def batch_loss(pred, target, timesteps, alphas_cumprod, *, prediction_type: str, loss_weights=None,
               loss_type: str = "l2", huber_c_value: float = 0.1, huber_schedule: str = "snr",
               min_snr_gamma: float = 0.0, scale_v_pred_loss_like_noise_pred: bool = False,
               v_pred_like_loss: float = 0.0, debiased_estimation_loss: bool = False) -> torch.Tensor:
    """kohya's order: element-wise loss → mean over C,H,W → × per-sample weight (prior_loss_weight for reg
    images) → × min-SNR weight → the v-prediction / debiasing options (loss_weights.py) → mean over the batch."""
    from . import loss_weights as kohya_weights

    c = huber_c(timesteps, alphas_cumprod, huber_c_value, huber_schedule) if loss_type == "huber" else None
    per_sample = elementwise_loss(pred, target, loss_type, c).mean(dim=list(range(1, pred.ndim)))
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
    if min_snr_gamma:
        per_sample = per_sample * min_snr_weight(timesteps, alphas_cumprod, min_snr_gamma, prediction_type)
    per_sample = kohya_weights.apply(per_sample, timesteps, alphas_cumprod, prediction_type=prediction_type,
                                    scale_v_pred_loss_like_noise_pred=scale_v_pred_loss_like_noise_pred,
                                    v_pred_like_loss=v_pred_like_loss,
                                    debiased_estimation_loss=debiased_estimation_loss)
    return per_sample.mean()
