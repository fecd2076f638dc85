"""Adapters compute exactly what the model itself computes (from the primitive parts), per architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_train_loop import single_torch_thread  # noqa: F401

from lora_trainer.arch import UnsupportedModel
from lora_trainer.arch.adapters import SizeConditioning, get_adapter
from lora_trainer.testing import TINY_ARCHS

CAPTIONS = ["a photo of a cat", "red square, (blue:1.2) background"]


def _sizes(n, original=(48, 64), crop=(0, 0), target=(64, 64)):
    rows = lambda v: torch.tensor([list(v)] * n, dtype=torch.float32)  # noqa: E731
    return SizeConditioning(rows(original), rows(crop), rows(target))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_text_conditioning_and_prediction_match_the_model(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    assert adapter.arch == arch
    assert adapter.prediction_type == ("v" if arch == "sd2v" else "epsilon")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([5, 900])
    with torch.no_grad():
        text = adapter.encode_text(CAPTIONS)
        if arch == "sdxl":
            ref = model.get_learned_conditioning(CAPTIONS, width=64, height=48)
            sizes = _sizes(2, original=(48, 64), target=(48, 64))
            vector = torch.cat([text.pooled, adapter.size_vector(sizes, "cpu")], 1)
            torch.testing.assert_close(text.context, ref["crossattn"])
            torch.testing.assert_close(vector, ref["vector"])
            torch.testing.assert_close(adapter.predict(x, t, text, sizes), model.apply_model(x, t, ref))
        else:
            ref = model.get_learned_conditioning(CAPTIONS)
            torch.testing.assert_close(text.context, ref)
            assert text.pooled is None
            torch.testing.assert_close(adapter.predict(x, t, text), model.apply_model(x, t, ref))


def test_sd1_clip_skip_uses_an_earlier_layer_with_final_layer_norm():
    model = tiny_model("sd1")
    adapter = get_adapter(model)
    embedder = model.cond_stage_model
    ids = embedder.tokenizer(CAPTIONS, truncation=True, max_length=77, padding="max_length",
                             return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = embedder.transformer(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        expected = embedder.transformer.text_model.final_layer_norm(hidden)
        torch.testing.assert_close(adapter.encode_text(CAPTIONS, clip_skip=2).context, expected)
        assert not torch.allclose(adapter.encode_text(CAPTIONS, clip_skip=1).context, expected)


def test_sdxl_size_conditioning_reaches_the_unet():
    model = tiny_model("sdxl")
    adapter = get_adapter(model)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([400])
    with torch.no_grad():
        text = adapter.encode_text(CAPTIONS[:1])
        base = adapter.predict(x, t, text, _sizes(1))
        for changed in (_sizes(1, original=(1024, 768)), _sizes(1, crop=(16, 0)), _sizes(1, target=(32, 64))):
            assert not torch.allclose(adapter.predict(x, t, text, changed), base)
    with pytest.raises(ValueError, match="size conditioning"):
        adapter.predict(x, t, text, None)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_encode_images_matches_the_model_and_fingerprint_tracks_the_vae(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.manual_seed(3)
    latents = adapter.encode_images(images)
    torch.manual_seed(3)
    expected = model.get_first_stage_encoding(model.encode_first_stage(images))
    torch.testing.assert_close(latents, expected)
    assert latents.dtype == torch.float32 and latents.shape == (2, 4, 8, 8)
    other = get_adapter(tiny_model("sd1" if arch == "sdxl" else "sdxl"))
    assert adapter.vae_fingerprint() == get_adapter(model).vae_fingerprint()
    assert adapter.vae_fingerprint() != other.vae_fingerprint()


def test_alphas_cumprod_prefers_the_original_schedule_and_is_fp32():
    model = tiny_model("sd1")
    adapter = get_adapter(model)
    acp = adapter.alphas_cumprod("cpu")
    assert acp.dtype == torch.float32 and acp.shape == (1000,)
    assert acp[0].item() == pytest.approx(1 - 0.00085, rel=1e-4)
    model.alphas_cumprod_original = acp.clone()
    try:
        model.alphas_cumprod.data = model.alphas_cumprod.half().float()  # what the webui's downcast option does
        torch.testing.assert_close(adapter.alphas_cumprod("cpu"), acp)
    finally:
        model.alphas_cumprod.data = acp.to(model.alphas_cumprod.dtype)
        del model.alphas_cumprod_original


def test_unsupported_models_are_refused_with_a_message():
    with pytest.raises(UnsupportedModel, match="No model"):
        get_adapter(None)


def test_fp16_vae_that_overflows_is_retried_in_fp32_and_left_fp16(monkeypatch):
    from lora_trainer.testing import build_tiny_model
    from lora_trainer.train.verify import model_state, state_differences

    model = build_tiny_model("sd1")  # private copy: its VAE is made fp16 like the webui's default
    model.first_stage_model.half()
    adapter = get_adapter(model)
    before = model_state(model)
    original = type(adapter)._encode
    dtypes = []

    def overflow_in_half(self, images, device, dtype):
        dtypes.append(next(self.vae.parameters()).dtype)
        out = original(self, images, device, dtype)
        return out * float("nan") if dtype == torch.float16 else out

    monkeypatch.setattr(type(adapter), "_encode", overflow_in_half)
    latents = adapter.encode_images(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert torch.isfinite(latents).all() and dtypes == [torch.float16, torch.float32]
    assert state_differences(before, model_state(model)) == []


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_medvram_hooks_run_before_parts_are_called_directly(arch, tmp_path):
    """The webui's --medvram moves a part to the GPU from a forward pre-hook on the part it calls (SD1:
    cond_stage_model.transformer, SD2: cond_stage_model.model, SDXL: conditioner; UNet: model.model)."""
    model = tiny_model(arch)
    text_part = {"sd1": lambda m: m.cond_stage_model.transformer, "sd2": lambda m: m.cond_stage_model.model,
                 "sdxl": lambda m: m.conditioner}[arch](model)
    woken = []
    handles = [text_part.register_forward_pre_hook(lambda m, args: woken.append("text")),
               model.model.register_forward_pre_hook(lambda m, args: woken.append("unet"))]
    model.lowvram = True
    try:
        adapter = get_adapter(model)
        with torch.no_grad():
            text = adapter.encode_text(["a cat"])
            adapter.predict(torch.randn(1, 4, 8, 8), torch.tensor([10]), text, _sizes(1))
        assert woken[0] == "text" and "unet" in woken
        from test_train_loop import make_config

        from lora_trainer.train import train

        refused = train(model, make_config(tmp_path, arch, steps=1, sdxl_unet_only=False))  # SDXL: TE on too
        assert refused.status == "error" and refused.message.startswith("train_text_encoder")
    finally:
        del model.lowvram
        for handle in handles:
            handle.remove()
