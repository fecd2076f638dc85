"""Fused SDPA attention for ldm's stock CrossAttention: same outputs and LoRA gradients, removed exactly, and the
webui's own attention optimizations (class-level patches) are left alone."""

from __future__ import annotations

import torch
from conftest import tiny_model

from lora_trainer.lora_net import LoRANetwork
from lora_trainer.testing import build_tiny_model
from lora_trainer.train.attention import FusedAttention


def _unet_call(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 77, 32, generator=g)
    return model.model.diffusion_model(x, torch.tensor([10, 700]), context=ctx)


def test_sdpa_matches_ldm_attention_and_lora_gradients():
    model = build_tiny_model("sd1")
    net = LoRANetwork.create(model, rank=4, alpha=4.0, train_text_encoder=False)
    with torch.no_grad():
        for p in net.trainable_parameters():
            p.normal_(0, 0.1)  # non-zero up weights, so attention LoRAs matter
    with net.attached():
        ref = _unet_call(model)
        ref.square().mean().backward()
        ref_grads = [p.grad.clone() for p in net.trainable_parameters()]
        for p in net.trainable_parameters():
            p.grad = None
        fused = FusedAttention(model.model.diffusion_model).enable()
        assert fused.count == 32  # 16 SpatialTransformers × (attn1, attn2), as in real SD1
        out = _unet_call(model)
        out.square().mean().backward()
        fused.remove()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    scale = max(g.abs().max().item() for g in ref_grads)
    for got, want in zip((p.grad for p in net.trainable_parameters()), ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * scale)  # fp32 reassociation, many layers deep
    assert not any("forward" in m.__dict__ for m in model.modules()), "remove() must delete every instance forward"


def test_webui_attention_optimization_is_left_alone(monkeypatch):
    from ldm.modules.attention import CrossAttention

    def webui_sdp_forward(self, x, context=None, mask=None):  # stands in for sd_hijack_optimizations' patch
        return CrossAttention.__dict__["_stock"](self, x, context, mask)

    webui_sdp_forward.__module__ = "modules.sd_hijack_optimizations"
    monkeypatch.setattr(CrossAttention, "_stock", CrossAttention.forward, raising=False)
    monkeypatch.setattr(CrossAttention, "forward", webui_sdp_forward)
    fused = FusedAttention(tiny_model("sd1").model.diffusion_model).enable()
    assert fused.count == 0


def test_one_layer_matches_tightly_with_and_without_context():
    from ldm.modules.attention import CrossAttention

    torch.manual_seed(0)
    x = torch.randn(2, 37, 64, requires_grad=True)
    cross = (CrossAttention(64, context_dim=48, heads=4, dim_head=16), torch.randn(2, 11, 48))
    self_attn = (CrossAttention(64, heads=4, dim_head=16), None)
    for layer, context in (cross, self_attn):
        ref = layer(x, context)
        (ref_gx,) = torch.autograd.grad(ref.sin().sum(), x)
        fused = FusedAttention(torch.nn.Sequential(layer)).enable()
        out = layer(x, context)
        (gx,) = torch.autograd.grad(out.sin().sum(), x)
        fused.remove()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-6)
