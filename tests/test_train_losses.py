"""The training math on known tensors: noisy latents, eps / v targets, min-SNR (eps and v), Huber, noise offset."""

from __future__ import annotations

import math

import pytest
import torch

from lora_trainer.train import losses


def _schedule():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def test_add_noise_and_velocity_on_known_values():
    acp = torch.zeros(1000)
    acp[10], acp[20] = 0.64, 0.36  # √ᾱ = 0.8 / 0.6, √(1−ᾱ) = 0.6 / 0.8
    x0 = torch.full((2, 1, 1, 1), 2.0)
    eps = torch.full((2, 1, 1, 1), -1.0)
    t = torch.tensor([10, 20])
    noisy = losses.add_noise(x0, eps, t, acp).flatten().tolist()
    assert noisy == pytest.approx([0.8 * 2 + 0.6 * -1, 0.6 * 2 + 0.8 * -1])
    v = losses.velocity(x0, eps, t, acp).flatten().tolist()
    assert v == pytest.approx([0.8 * -1 - 0.6 * 2, 0.6 * -1 - 0.8 * 2])
    assert torch.equal(losses.target_for("epsilon", x0, eps, t, acp), eps)
    assert torch.equal(losses.target_for("v", x0, eps, t, acp), losses.velocity(x0, eps, t, acp))
    with pytest.raises(ValueError):
        losses.target_for("sample", x0, eps, t, acp)


def test_v_target_is_consistent_with_eps_and_x0():
    """v = √ᾱ ε − √(1−ᾱ) x0, so √ᾱ x_t − √(1−ᾱ) v recovers x0 (the identity v-prediction samplers rely on)."""
    acp = _schedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    xt, v = losses.add_noise(x0, eps, t, acp), losses.velocity(x0, eps, t, acp)
    a = acp[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(a.sqrt() * xt - (1 - a).sqrt() * v, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.sqrt() * v + (1 - a).sqrt() * xt, eps, atol=1e-5, rtol=1e-5)


def test_min_snr_weights_eps_and_v():
    acp = torch.zeros(1000)
    acp[0], acp[1] = 0.9, 0.5  # SNR 9 and 1
    t = torch.tensor([0, 1])
    assert losses.snr(t, acp).tolist() == pytest.approx([9.0, 1.0])
    # eps: min(SNR, γ) / SNR ; v: min(SNR, γ) / (SNR + 1)
    assert losses.min_snr_weight(t, acp, 5.0, "epsilon").tolist() == pytest.approx([5 / 9, 1.0])
    assert losses.min_snr_weight(t, acp, 5.0, "v").tolist() == pytest.approx([5 / 10, 1 / 2])


def test_batch_loss_order_weights_and_huber():
    acp = torch.zeros(1000)
    acp[0], acp[1] = 0.9, 0.5
    t = torch.tensor([0, 1])
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.ones(2, 1, 2, 2) * torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    plain = losses.batch_loss(pred, target, t, acp, prediction_type="epsilon")
    assert plain.item() == pytest.approx((1 + 4) / 2)
    weighted = losses.batch_loss(pred, target, t, acp, prediction_type="epsilon", loss_weights=torch.tensor([1.0, 0.5]),
                                 min_snr_gamma=5.0)
    assert weighted.item() == pytest.approx((1 * 1 * 5 / 9 + 4 * 0.5 * 1) / 2)
    huber = losses.batch_loss(pred, target, t, acp, prediction_type="epsilon", loss_type="huber", huber_c_value=0.1,
                              huber_schedule="constant")
    expected = [2 * 0.1 * (math.sqrt(d * d + 0.01) - 0.1) for d in (1.0, 2.0)]
    assert huber.item() == pytest.approx(sum(expected) / 2)


def test_huber_schedules():
    acp = _schedule()
    t = torch.tensor([0, 500, 999])
    assert losses.huber_c(t, acp, 0.1, "constant").tolist() == pytest.approx([0.1] * 3)
    exp = losses.huber_c(t, acp, 0.1, "exponential")
    assert exp[0].item() == pytest.approx(1.0) and exp[-1].item() == pytest.approx(0.1, rel=0.01)
    snr_c = losses.huber_c(t, acp, 0.1, "snr")
    assert snr_c[0] > snr_c[1] > snr_c[2] >= 0.1  # c shrinks towards huber_c as noise grows


def test_noise_offset_shifts_whole_channels_and_timesteps_are_uniform_in_range():
    latents = torch.zeros(64, 4, 8, 8)
    plain = losses.sample_noise(latents, torch.Generator().manual_seed(1))
    shifted = losses.sample_noise(latents, torch.Generator().manual_seed(1), noise_offset=0.5)
    offset = shifted - plain
    torch.testing.assert_close(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-5, rtol=0)  # per channel
    assert 0.2 < offset[:, :, 0, 0].std().item() < 0.8
    t = losses.sample_timesteps(4000, torch.Generator().manual_seed(2), 100, 200)
    assert t.min().item() == 100 and t.max().item() == 199  # upper bound exclusive, like kohya
