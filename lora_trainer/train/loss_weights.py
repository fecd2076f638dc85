"""kohya's per-timestep loss options for v-prediction and debiasing (sd-scripts custom_train_functions.py), and the
zero-terminal-SNR schedule (arXiv 2305.08891). Each weight multiplies the per-sample loss after the prior-loss
weight and min-SNR-γ, in kohya's order: scale_v_pred_loss_like_noise_pred, v_pred_like_loss, debiased_estimation.

SNR_t = ᾱ_t / (1 − ᾱ_t); where a formula divides by it, kohya caps it at 1000 (t = 0 has SNR → ∞ on some schedules).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

SNR_CAP = 1000.0


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale √ᾱ so that √ᾱ_T = 0 (pure noise at the last step) and √ᾱ_0 is unchanged (paper's Alg. 1;
    kohya's fix_noise_scheduler_betas_for_zero_terminal_snr, done on ᾱ directly: its betas round trip is exact)."""
    root = alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    return (root ** 2).to(alphas_cumprod.dtype)


def training_alphas_cumprod(adapter, config, device, log=None) -> torch.Tensor:
    """The ᾱ schedule this run trains with: the model's own, rescaled when `zero_terminal_snr` is on."""
    acp = adapter.alphas_cumprod(device)
    if not getattr(config, "zero_terminal_snr", False):
        return acp
    if adapter.prediction_type != "v":
        # kohya warns the same: at SNR 0 an ε-prediction model has nothing to predict from
        (log or logger.warning)("zero_terminal_snr is on for an epsilon-prediction model; training will be "
                                "unexpected (it is meant for v-prediction models)")
    return rescale_zero_terminal_snr(acp)


def _snr(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, cap: bool = True) -> torch.Tensor:
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = a / (1 - a)
    return torch.clamp(snr, max=SNR_CAP) if cap else snr


def v_pred_scale(timesteps, alphas_cumprod) -> torch.Tensor:
    """kohya get_snr_scale: SNR / (SNR + 1), SNR capped at 1000."""
    snr = _snr(timesteps, alphas_cumprod)
    return snr / (snr + 1)


def debiased_weight(timesteps, alphas_cumprod, prediction_type: str) -> torch.Tensor:
    """kohya apply_debiased_estimation: 1/(SNR+1) for v, 1/√SNR for ε (SNR capped at 1000)."""
    snr = _snr(timesteps, alphas_cumprod)
    return 1 / (snr + 1) if prediction_type == "v" else 1 / torch.sqrt(snr)


def apply(per_sample: torch.Tensor, timesteps, alphas_cumprod, *, prediction_type: str,
          scale_v_pred_loss_like_noise_pred: bool = False, v_pred_like_loss: float = 0.0,
          debiased_estimation_loss: bool = False) -> torch.Tensor:
    """The per-sample loss [B] with the enabled options applied, in kohya's order."""
    if scale_v_pred_loss_like_noise_pred:
        per_sample = per_sample * v_pred_scale(timesteps, alphas_cumprod)
    if v_pred_like_loss:
        per_sample = per_sample + per_sample / v_pred_scale(timesteps, alphas_cumprod) * v_pred_like_loss
    if debiased_estimation_loss:
        per_sample = per_sample * debiased_weight(timesteps, alphas_cumprod, prediction_type)
    return per_sample
