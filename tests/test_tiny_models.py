"""The test substrate: tiny SD models built from the real ldm / transformers / open_clip classes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import tiny_model
from torch import nn

from lora_trainer.testing import TINY_ARCHS


def _conditioning(arch, model, prompts):
    if arch == "sdxl":
        return model.get_learned_conditioning(prompts, width=64, height=64)
    return model.get_learned_conditioning(prompts)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_model_encodes_conditions_and_trains_one_step(arch):
    model = tiny_model(arch)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = model.get_first_stage_encoding(model.encode_first_stage(images))
    assert latents.shape == (2, 4, 8, 8)
    cond = _conditioning(arch, model, ["a photo of a cat", "a red car"])
    context = cond["crossattn"] if arch == "sdxl" else cond
    assert context.shape[:2] == (2, 77)
    assert not torch.allclose(context[0], context[1]), "different prompts must condition differently"

    unet = model.model.diffusion_model
    params = [p for p in unet.parameters() if p.requires_grad]
    assert params, "the UNet must have trainable parameters (the webui does not freeze it)"
    t = torch.tensor([10, 900])
    noise = torch.randn_like(latents)
    acp = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = acp.sqrt() * latents + (1 - acp).sqrt() * noise
    pred = model.apply_model(noisy, t, cond)
    loss = nn.functional.mse_loss(pred, noise)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    unet.zero_grad(set_to_none=True)


def test_parameterization_and_scale_factor():
    assert tiny_model("sd1").parameterization == "eps"
    assert tiny_model("sd2v").parameterization == "v"
    assert tiny_model("sdxl").scale_factor == pytest.approx(0.13025)
    assert tiny_model("sd1").scale_factor == pytest.approx(0.18215)


def test_text_encoders_are_the_real_classes():
    from open_clip.model import CLIP
    from transformers import CLIPTextModel

    sd1 = tiny_model("sd1").cond_stage_model
    assert isinstance(sd1.transformer, CLIPTextModel)
    sd2 = tiny_model("sd2v").cond_stage_model
    assert isinstance(sd2.model, CLIP)
    assert isinstance(sd2.model.transformer.resblocks[0].attn, nn.MultiheadAttention)
    te1, te2 = tiny_model("sdxl").conditioner.embedders[:2]
    assert isinstance(te1.transformer, CLIPTextModel) and isinstance(te2.model, CLIP)


def test_tokenizer_matches_open_clip():
    import open_clip

    tok = tiny_model("sd1").cond_stage_model.tokenizer
    text = "a photo of a cat, masterpiece"
    ids = tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"][0]
    oc = open_clip.tokenize([text])[0]
    n = int((oc != 0).sum())
    assert ids[:n].tolist() == oc[:n].tolist()
    assert ids[n:].eq(49407).all(), "SD1 pads with the EOS id"


def test_unet_layouts_follow_real_block_numbering():
    sd1 = dict(tiny_model("sd1").model.diffusion_model.named_modules())
    # SD1: attention in input blocks 1,2,4,5,7,8, middle 1, output blocks 3..11
    for i in (1, 2, 4, 5, 7, 8):
        assert f"input_blocks.{i}.1.proj_in" in sd1
    assert "input_blocks.10.1" not in sd1 and "output_blocks.2.1.proj_in" not in sd1
    assert isinstance(sd1["input_blocks.1.1.proj_in"], nn.Conv2d)  # SD1: 1x1 conv projections
    sd2 = dict(tiny_model("sd2v").model.diffusion_model.named_modules())
    assert isinstance(sd2["input_blocks.1.1.proj_in"], nn.Linear)  # SD2: use_linear_in_transformer
    xl = dict(tiny_model("sdxl").model.diffusion_model.named_modules())
    assert "input_blocks.1.1" not in xl and "input_blocks.4.1.proj_in" in xl  # level 0 has no attention
    assert "input_blocks.7.1.transformer_blocks.1.attn2.to_k" in xl  # deeper levels have deeper transformers
    assert "label_emb.0.0" in xl and "label_emb.0.2" in xl
    assert "output_blocks.2.2.conv" in xl and "input_blocks.3.0.op" in xl


def test_import_without_webui_or_gpu():
    code = "import sys, lora_trainer; assert 'modules' not in sys.modules; print(lora_trainer.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
