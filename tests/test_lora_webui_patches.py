"""Issue 4: the LoRA coexists with the webui's Lora extension, which patches Linear/Conv2d/MultiheadAttention
`forward` at class level (webui-integration.md §4.4): its patch keeps running on every LoRA target while we are
attached, whichever was installed first, and detach leaves it (and the model) as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from torch import nn

from lora_trainer.arch import model_parts
from lora_trainer.lora_net import LinearLoRA, LoRANetwork

PATCHED_CLASSES = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)



def _install_fake_webui_lora(monkeypatch, calls: list) -> None:
    """Like `lora_patches.LoraPatches`: replace the class forward with one that does its own work, then calls the
    original."""
    for cls in PATCHED_CLASSES:
        original = cls.forward

        def patched(self, *args, _original=original, **kwargs):
            calls.append(id(self))  # the real patch calls network_apply_weights(self) here
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", patched)


def _outputs(model) -> list:
    parts = model_parts(model)
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(1, 8, parts.unet.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features,
                          generator=generator)
    with torch.no_grad():
        unet = parts.unet(torch.randn(1, 4, 8, 8, generator=generator), timesteps=torch.tensor([7]), context=context)
        return [unet, parts.text_encoders[0].embedder(["a photo of a cat"])]


def _same(a: list, b: list) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_class_level_patches_keep_running_while_attached(monkeypatch):
    model = tiny_model("sd2")  # Linear projections, OpenCLIP fused attention, conv targets via conv_rank
    net = LoRANetwork.create(model, rank=4, alpha=4.0, conv_rank=2)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    targets = {id(o.module) for o in net._overrides}
    assert {type(o.module) for o in net._overrides} == set(PATCHED_CLASSES)
    base = _outputs(model)
    with net.attached():
        with_lora = _outputs(model)
    assert not _same(base, with_lora)

    calls: list = []
    with monkeypatch.context() as patch:
        _install_fake_webui_lora(patch, calls)  # patched first, attached second
        with net.attached():
            assert _same(_outputs(model), with_lora)
            assert targets <= set(calls), "the webui's patched forward ran on every LoRA target"
        calls.clear()
        assert _same(_outputs(model), base) and targets <= set(calls), "after detach: patch still active, no LoRA"
        net.attach()
    # the webui undoes its patches (script unload) while we are attached: the class's own forward is used again
    assert nn.Linear.forward.__qualname__ == "Linear.forward"
    assert _same(_outputs(model), with_lora)
    with monkeypatch.context() as patch:
        calls.clear()
        _install_fake_webui_lora(patch, calls)  # attached first, patched second
        assert _same(_outputs(model), with_lora) and targets <= set(calls)
        net.detach()
        calls.clear()
        assert _same(_outputs(model), base) and targets <= set(calls)
    assert _same(_outputs(model), base)
    assert not any("forward" in m.__dict__ for m in model.modules()), "no instance override left behind"


def test_an_override_stacked_on_top_survives_detach():
    linear = nn.Linear(4, 4)
    lora = LinearLoRA.for_target("l", linear, 2, 2.0)
    nn.init.ones_(lora.lora_up.weight)
    ours = lora.make_override(linear)
    ours.install()
    inner = linear.forward
    linear.forward = lambda x: inner(x) * 2  # someone else (another extension) wraps the instance after us
    x = torch.randn(3, 4)
    expected_without_lora = nn.Linear.forward(linear, x) * 2
    with pytest.warns(UserWarning, match="overridden again"):
        ours.remove()
    torch.testing.assert_close(linear(x), expected_without_lora)  # theirs kept, ours a pass-through
