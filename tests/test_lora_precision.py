"""Issue 4: LoRA weights stay fp32 on a low-precision base and under autocast; outputs keep the base dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_trainer.lora_net import ConvLoRA, LinearLoRA, MultiheadAttentionLoRA


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_base_keeps_fp32_lora(dtype):
    torch.manual_seed(0)
    linear, conv = nn.Linear(8, 6).to(dtype), nn.Conv2d(4, 5, 3, padding=1).to(dtype)
    attention = nn.MultiheadAttention(8, 2).to(dtype)
    loras = [LinearLoRA.for_target("l", linear, 2, 1.0), ConvLoRA.for_target("c", conv, 2, 1.0)]
    group = MultiheadAttentionLoRA.create(attention, ["q", "k", "v", "o"], 2, 1.0)
    overrides = [loras[0].make_override(linear), loras[1].make_override(conv), group.make_override()]
    for lora in loras + group.loras:
        assert lora.lora_down.weight.dtype == lora.lora_up.weight.dtype == torch.float32
        nn.init.normal_(lora.lora_up.weight)
    for override in overrides:
        override.install()
    x, image = torch.randn(3, 8, dtype=dtype), torch.randn(1, 4, 6, 6, dtype=dtype)
    outs = [linear(x), conv(image), attention(x[:, None], x[:, None], x[:, None])[0]]
    assert [o.dtype for o in outs] == [dtype] * 3
    sum(o.float().sum() for o in outs).backward()
    for lora in loras + group.loras:
        assert lora.lora_up.weight.grad.dtype == torch.float32 and torch.isfinite(lora.lora_up.weight.grad).all()
    for override in overrides:
        override.remove()
    assert "forward" not in linear.__dict__ and "in_proj_weight" not in attention.__dict__


def test_autocast_runs_lora_in_the_autocast_dtype_with_fp32_weights():
    linear = nn.Linear(8, 6)
    lora = LinearLoRA.for_target("l", linear, 2, 1.0)
    nn.init.normal_(lora.lora_up.weight)
    override = lora.make_override(linear)
    override.install()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = linear(torch.randn(3, 8))
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
        assert lora.lora_down.weight.grad.dtype == torch.float32
    finally:
        override.remove()
