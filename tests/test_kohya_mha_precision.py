"""Issue 11 item 7: on an fp16/bf16 OpenCLIP attention (SD2 text encoder, SDXL TE2) a small q/k/v LoRA update is not
rounded into a low-precision copy of in_proj_weight: the q/k/v branch runs in fp32 beside the frozen projection."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lora_trainer.lora_net import MultiheadAttentionLoRA

D, HEADS = 64, 4


def _attention_with_lora(dtype, delta_scale: float, seed: int = 0):
    torch.manual_seed(seed)
    attention = nn.MultiheadAttention(D, HEADS)
    nn.init.normal_(attention.in_proj_bias, std=0.02)
    attention = attention.to(dtype)
    group = MultiheadAttentionLoRA.create(attention, ["q", "k", "v", "o"], 4, 4.0)
    for lora in (group.q, group.k, group.v):  # |ΔW| = |up @ down| ≈ delta_scale; out_proj's LoRA stays zero
        nn.init.normal_(lora.lora_down.weight, std=1.0)
        nn.init.normal_(lora.lora_up.weight, std=delta_scale / 2)
    return attention, group


def _reference(attention, group, x, multiplier):
    """The exact math in float64: the attention with W + multiplier·ΔW merged."""
    ref = copy.deepcopy(attention).double()
    with torch.no_grad():
        delta = torch.cat([lora.lora_up.weight.double() @ lora.lora_down.weight.double() * lora.scale
                           for lora in (group.q, group.k, group.v)])
        ref.in_proj_weight += multiplier * delta
        return ref(x.double(), x.double(), x.double(), need_weights=False)[0]


def _run(attention, group, x, multiplier):
    for lora in group.loras:
        lora.multiplier = multiplier
    with torch.no_grad():
        return attention(x, x, x, need_weights=False)[0].double()


@pytest.mark.parametrize("dtype,delta_scale", [(torch.float16, 1e-6), (torch.bfloat16, 1e-4)])
def test_small_qkv_update_survives_low_precision(dtype, delta_scale):
    attention, group = _attention_with_lora(dtype, delta_scale)
    x = torch.randn(77, 64, D).to(dtype)
    override = group.make_override()
    override.install()
    try:
        with_lora, without = _run(attention, group, x, 1.0), _run(attention, group, x, 0.0)
    finally:
        override.remove()
    expected = _reference(attention, group, x, 1.0) - _reference(attention, group, x, 0.0)
    assert expected.abs().mean() > 0
    got = with_lora - without
    # least-squares share of the exact LoRA effect that reaches the output: ~1 when the update survives; the
    # merged fp16 weight keeps ~24 % of it at this size (bf16: ~0 %)
    share = float((got * expected).sum() / (expected * expected).sum())
    assert 0.9 < share < 1.1, share
    # and the output is the exact math, to the output dtype's rounding
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(with_lora, _reference(attention, group, x, 1.0), atol=4 * eps, rtol=4 * eps)
    assert "in_proj_weight" not in attention.__dict__


def test_fp32_attention_under_autocast_keeps_the_update():
    attention, group = _attention_with_lora(torch.float32, 1e-4)
    x = torch.randn(77, 8, D)
    override = group.make_override()
    override.install()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with_lora, without = _run(attention, group, x, 1.0), _run(attention, group, x, 0.0)
            out = attention(x, x, x, need_weights=False)[0]
    finally:
        override.remove()
    assert out.dtype == torch.bfloat16  # what the merged forward returns under autocast
    expected = _reference(attention, group, x, 1.0) - _reference(attention, group, x, 0.0)
    share = float(((with_lora - without) * expected).sum() / (expected * expected).sum())
    assert 0.9 < share < 1.1, share


def test_fp32_without_autocast_is_the_exact_merged_math():
    attention, group = _attention_with_lora(torch.float32, 1e-2)
    x = torch.randn(77, 2, D)
    override = group.make_override()
    override.install()
    try:
        got = _run(attention, group, x, 1.0)
        group.prefer_unfused = True
        separate = _run(attention, group, x, 1.0)
    finally:
        override.remove()
    expected = _reference(attention, group, x, 1.0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(separate, expected, atol=1e-5, rtol=1e-5)
