"""Gradient checkpointing on the webui's own UNet blocks gives the LoRA the same gradients as without it,
with a frozen base (where the webui's reentrant checkpointing gives none), and is undone exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_train_loop import single_torch_thread  # noqa: F401

from lora_trainer.arch.adapters import SizeConditioning, get_adapter
from lora_trainer.lora_net import LoRANetwork
from lora_trainer.train import losses
from lora_trainer.train.checkpointing import GradientCheckpointing
from lora_trainer.train.model_guard import ModelGuard
from lora_trainer.train.verify import model_state, state_differences


def lora_grads(model, checkpointing: bool) -> dict:
    adapter = get_adapter(model)
    torch.manual_seed(0)
    network = LoRANetwork.create(model, rank=4, alpha=4, conv_rank=2, conv_alpha=1)
    with torch.no_grad():  # non-zero up weights, so gradients reach the down weights too
        for p in network.parameters():
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(1)
    latents, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([100, 700])
    acp = adapter.alphas_cumprod("cpu")
    sizes = None
    if adapter.uses_size_conditioning:
        hw = torch.tensor([[64.0, 64.0]] * 2)
        sizes = SizeConditioning(hw, torch.zeros_like(hw), hw)
    guard = ModelGuard(model).snapshot()
    model.requires_grad_(False)  # frozen base, as in training
    ckpt = GradientCheckpointing(adapter.unet)
    try:
        network.attach()
        if checkpointing:
            ckpt.enable()
            assert ckpt.enabled
        text = adapter.encode_text(["a red circle", "a blue square"])
        pred = adapter.predict(losses.add_noise(latents, noise, t, acp), t, text, sizes)
        torch.nn.functional.mse_loss(pred, noise).backward()
    finally:
        ckpt.remove()
        network.detach()
        guard.restore()
    return {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_checkpointing_gives_the_same_lora_gradients(arch):
    model = tiny_model(arch)
    before = model_state(model)
    plain = lora_grads(model, checkpointing=False)
    checkpointed = lora_grads(model, checkpointing=True)
    assert state_differences(before, model_state(model)) == []
    unet_grads = [n for n in plain if "lora_unet_" in n]
    assert unet_grads and plain.keys() == checkpointed.keys()
    dead = [n for n in unet_grads if plain[n].abs().sum() == 0]
    # only self-attention q/k over the 1x1 middle block of a 64 px image (softmax of one token) has no gradient
    assert all("attn1_to_q" in n or "attn1_to_k" in n for n in dead), dead
    assert len(dead) <= 4
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_patches_the_block_instances_and_removes_them_exactly():
    model = tiny_model("sdxl")
    unet = get_adapter(model).unet
    before = model_state(model)
    ckpt = GradientCheckpointing(unet).enable()
    patched = {type(m).__name__ for m in unet.modules() if "forward" in m.__dict__}
    assert patched == {"ResBlock", "BasicTransformerBlock"}
    ckpt.remove()
    assert state_differences(before, model_state(model)) == []
