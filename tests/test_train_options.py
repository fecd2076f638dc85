"""Options that change the path through the loop: no latent cache, bf16 autocast, Huber / min-SNR / noise offset,
frozen text encoder with cached outputs, progress fields, preview hook."""

from __future__ import annotations

import math

import torch
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.arch.adapters.sd import SDAdapter
from lora_trainer.train import TrainHooks, train


def test_without_latent_cache_and_with_random_crop(tmp_path):
    result = train(tiny_model("sdxl"), make_config(tmp_path, "sdxl", steps=2, cache_latents=False, random_crop=True,
                                                     flip_aug=True))
    assert result.status == "completed", result.message
    assert all(math.isfinite(v) for v in result.loss_history)


def test_bf16_autocast_with_huber_min_snr_and_noise_offset(tmp_path):
    config = make_config(tmp_path, "sd1", steps=2, mixed_precision="bf16", loss_type="huber", min_snr_gamma=5.0,
                         noise_offset=0.1, max_grad_norm=0.5, optimizer="Lion", unet_lr=1e-4)
    result = train(tiny_model("sd1"), config)
    assert result.status == "completed", result.message
    assert all(math.isfinite(v) for v in result.loss_history)


def test_frozen_text_encoder_is_encoded_once_per_caption(tmp_path, monkeypatch):
    calls = []
    original = SDAdapter.encode_text

    def spy(self, captions, clip_skip=1, **kwargs):
        calls.append((list(captions), torch.is_grad_enabled()))
        return original(self, captions, clip_skip, **kwargs)

    monkeypatch.setattr(SDAdapter, "encode_text", spy)
    model = tiny_model("sd1")
    result = train(model, make_config(tmp_path / "a", "sd1", steps=6, train_text_encoder=False))
    assert result.status == "completed", result.message
    encoded = [c for batch, _ in calls for c in batch]
    assert len(encoded) == len(set(encoded)) <= 4 and not any(grad for _, grad in calls)

    calls.clear()
    config = make_config(tmp_path / "b", "sd1", steps=3, train_text_encoder=False, cache_text_encoder_outputs=True)
    result = train(model, config)
    assert result.status == "completed", result.message
    assert len(calls) == 1 and len(calls[0][0]) == 4  # all four captions up front, none during training

    refused = train(model, make_config(tmp_path / "c", "sd1", steps=2, train_text_encoder=False,
                                       cache_text_encoder_outputs=True, shuffle_caption=True))
    assert refused.status == "error" and refused.message.startswith("cache_text_encoder_outputs")


def test_progress_reports_every_field(tmp_path):
    seen = []
    result = train(tiny_model("sd1"), make_config(tmp_path, "sd1", steps=0, max_train_epochs=2, train_batch_size=4,
                                                  repeats=2),
                   progress=seen.append)
    assert result.status == "completed", result.message
    training = [p for p in seen if p.phase == "training" and p.loss is not None]
    assert [p.step for p in training] == [1, 2, 3, 4] and {p.total_steps for p in training} == {4}
    assert [p.epoch for p in training] == [1, 1, 2, 2] and {p.total_epochs for p in training} == {2}
    last = training[-1]
    assert last.avg_loss == sum(p.loss for p in training[-2:]) / 2  # moving average over one epoch of steps
    assert last.lr == 1e-3 and last.it_per_s > 0 and last.eta_s == 0
    assert [p.phase for p in seen].count("saving") == 1 and seen[-1].phase == "done"


def test_preview_hook_sees_the_lora_attached_and_checkpointing_off(tmp_path):
    model = tiny_model("sd1")
    unet = model.model.diffusion_model
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    context = torch.randn(1, 77, 32)
    with torch.no_grad():
        base = unet(x, timesteps=t, context=context)
    calls = []

    def on_sample(step, epoch, network, adapter):
        assert adapter.arch == "sd1" and network.is_attached and not network.training
        assert not any("forward" in m.__dict__ for m in unet.modules() if type(m).__name__ == "ResBlock")
        calls.append((step, epoch, (unet(x, timesteps=t, context=context) - base).abs().max().item()))

    config = make_config(tmp_path, "sd1", steps=0, max_train_epochs=2, train_batch_size=4, repeats=2,
                         sample_every_n_steps=3, sample_every_n_epochs=1, gradient_checkpointing=True)
    result = train(model, config, hooks=TrainHooks(on_sample=on_sample))
    assert result.status == "completed", result.message
    assert [(s, e) for s, e, _ in calls] == [(2, 1), (3, 2), (4, 2)]
    assert all(diff > 0 for _, _, diff in calls)  # the trained LoRA changes the UNet's output
