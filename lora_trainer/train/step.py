"""One micro-batch: noise → noisy latents → UNet → loss (kohya-lora-format.md §5.2-5.5)."""

from __future__ import annotations

import random

import torch

from . import losses


def step_seed(seed: int, step: int, micro: int) -> int:
    """Every random number of optimizer step `step`, micro-batch `micro` comes from this seed, so a resumed run
    draws exactly what the uninterrupted run drew (string seeding of random.Random is stable across runs)."""
    return random.Random(f"{seed}:{step}:{micro}").getrandbits(63)


def diffusion_loss(adapter, batch, text, *, config, alphas_cumprod, generator: torch.Generator, precision):
    """Scalar fp32 loss for one batch; `text` is the TextConditioning for batch.captions."""
    latents = batch.latents
    noise = losses.sample_noise(latents, generator, config.noise_offset)
    timesteps = losses.sample_timesteps(latents.shape[0], generator, config.min_timestep, config.max_timestep,
                                        device=latents.device)
    noisy = losses.add_noise(latents, noise, timesteps, alphas_cumprod)
    with precision.autocast():
        pred = adapter.predict(noisy, timesteps, text, batch.sizes)
    target = losses.target_for(adapter.prediction_type, latents, noise, timesteps, alphas_cumprod)
    return losses.batch_loss(pred, target, timesteps, alphas_cumprod, prediction_type=adapter.prediction_type,
                             loss_weights=batch.loss_weights, loss_type=config.loss_type,
                             huber_c_value=config.huber_c, huber_schedule=getattr(config, "huber_schedule", "snr"),
                             min_snr_gamma=config.min_snr_gamma,
                             scale_v_pred_loss_like_noise_pred=config.scale_v_pred_loss_like_noise_pred,
                             v_pred_like_loss=config.v_pred_like_loss,
                             debiased_estimation_loss=config.debiased_estimation_loss)
