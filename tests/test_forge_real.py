"""Forge's own classes (backend/nn, backend/operations, backend/patcher) from a checkout: FORGE_DIR=/path/to/forge.

Skipped without FORGE_DIR, and when the environment lacks what Forge's backend imports (run them under Forge's
pins: .ci/constraints-forge.txt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not FORGE_DIR, reason="FORGE_DIR is not set")

# IntegratedUNet2DConditionModel kwargs for the real checkpoints, as huggingface_guess derives them
REAL_UNETS = {
    "sd1": dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2] * 4, num_heads=8,
                transformer_depth=[1] * 6 + [0] * 2, transformer_depth_output=[1] * 9 + [0] * 3,
                transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False),
    "sd2": dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2] * 4, num_head_channels=64,
                transformer_depth=[1] * 6 + [0] * 2, transformer_depth_output=[1] * 9 + [0] * 3,
                transformer_depth_middle=1, context_dim=1024, use_linear_in_transformer=True),
    "sdxl": dict(model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[2] * 3, num_head_channels=64,
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 transformer_depth_middle=10, context_dim=2048, use_linear_in_transformer=True,
                 adm_in_channels=2816, num_classes="sequential"),
}
TE_CONFIGS = {  # Forge's shipped text-encoder configs (backend/huggingface/...)
    "sd1": [("lora_te", "runwayml/stable-diffusion-v1-5/text_encoder")],
    "sd2": [("lora_te", "stabilityai/stable-diffusion-2-1/text_encoder")],
    "sdxl": [("lora_te1", "stabilityai/stable-diffusion-xl-base-1.0/text_encoder"),
             ("lora_te2", "stabilityai/stable-diffusion-xl-base-1.0/text_encoder_2")],
}


@pytest.fixture(scope="module")
def backend():
    try:
        from lora_trainer.testing.forge_layout import import_forge_backend

        return import_forge_backend(FORGE_DIR)
    except ImportError as exc:
        pytest.skip(f"Forge's backend does not import here ({exc}); use Forge's pins")


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_real_size_forge_modules_take_exactly_the_a1111_names(backend, arch):
    """Forge's UNet class at the real config and HF CLIP at Forge's shipped configs, built on the meta device:
    every kohya name of the A1111 layout, and no other (conv layers included)."""
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lora_trainer.arch.parts import TextEncoderPart
    from lora_trainer.lora_net.layouts import expected_lora_names
    from lora_trainer.lora_net.targets import text_encoder_targets, unet_targets

    with torch.device("meta"):
        unet = IntegratedUNet2DConditionModel(in_channels=4, out_channels=4, use_spatial_transformer=True,
                                              **REAL_UNETS[arch])
        names = {n for t in unet_targets(unet, arch, include_conv=True) for n in t.names}
        for prefix, folder in TE_CONFIGS[arch]:
            config = json.loads((Path(FORGE_DIR) / "backend/huggingface" / folder / "config.json").read_text())
            model = CLIPTextModel(CLIPTextConfig(**config))
            part = TextEncoderPart(prefix, "hf_clip", None, model, len(model.text_model.encoder.layers))
            names |= {n for t in text_encoder_targets(part) for n in t.names}
    assert names == set(expected_lora_names(arch, include_conv=True))


@pytest.mark.parametrize("arch", ["sd1", "sd2v", "sdxl"])
def test_real_forge_classes_detect_and_adapt(backend, arch):
    from lora_trainer.arch import detect_arch, get_adapter
    from lora_trainer.testing.forge_layout import build_forge_engine

    engine = build_forge_engine(arch, FORGE_DIR)
    assert detect_arch(engine) == arch
    adapter = get_adapter(engine)
    assert adapter.prediction_type == ("v" if arch == "sd2v" else "epsilon")
    text = adapter.encode_text(["a photo of hero"], clip_skip=1)
    assert text.context.shape[:2] == (1, 77) and (text.pooled is not None) == (arch == "sdxl")


def test_checkpointing_works_on_forge_unet_and_gives_the_same_gradients(backend):
    """Forge's blocks raise when asked to checkpoint themselves; the trainer's per-instance checkpointing must
    patch Forge's ResBlock / BasicTransformerBlock and give exactly the gradients of a plain backward."""
    from lora_trainer.arch import get_adapter
    from lora_trainer.lora_net import LoRANetwork
    from lora_trainer.testing.forge_layout import build_forge_engine
    from lora_trainer.train.checkpointing import GradientCheckpointing

    engine = build_forge_engine("sd1", FORGE_DIR, seed=1)
    adapter = get_adapter(engine)
    adapter.root_module.requires_grad_(False)
    net = LoRANetwork.create(engine, rank=4, alpha=4.0, conv_rank=2, train_text_encoder=False)
    for p in net.trainable_parameters():
        torch.nn.init.normal_(p, std=0.02)
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        text = adapter.encode_text(["hero", "a photo"])

    def grads():
        net.zero_grad(set_to_none=True)
        adapter.predict(x, t, text).square().mean().backward()
        return [p.grad.clone() for p in net.trainable_parameters()]

    adapter.begin_training()
    with net.attached():
        plain = grads()
        with GradientCheckpointing(adapter.unet) as ckpt:
            assert len(ckpt._patched) > 0
            checkpointed = grads()
    adapter.end_training()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_forge_unet_trains_like_the_ldm_unet_with_the_same_weights(backend):
    """Forge loads ldm's `model.diffusion_model.*` weights as they are: with one state dict and one LoRA, Forge's
    UNet (made differentiable by InplaceSafeNorms) gives ldm's output and ldm's LoRA gradients."""
    from backend.nn.unet import IntegratedUNet2DConditionModel

    from lora_trainer.arch.adapters.forge_autograd import InplaceSafeNorms
    from lora_trainer.lora_net import LoRANetwork
    from lora_trainer.testing import build_tiny_model

    ldm = build_tiny_model("sd1", seed=8)  # private: it gets frozen below
    forge_unet = IntegratedUNet2DConditionModel(
        in_channels=4, out_channels=4, model_channels=32, channel_mult=[1, 1, 2, 2], num_res_blocks=[2] * 4,
        num_heads=8, transformer_depth=[1] * 6 + [0] * 2, transformer_depth_output=[1] * 9 + [0] * 3,
        transformer_depth_middle=1, context_dim=32, use_spatial_transformer=True)
    forge_unet.load_state_dict(ldm.model.diffusion_model.state_dict(), strict=True)
    forge_unet.requires_grad_(False)
    ldm_net = LoRANetwork.create(ldm, rank=4, alpha=4.0, conv_rank=2, train_text_encoder=False)
    torch.manual_seed(3)
    for p in ldm_net.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    from lora_trainer.lora_net.targets import unet_targets

    forge_targets = {t.names[0]: t for t in unet_targets(forge_unet, "sd1", include_conv=True)}
    assert set(forge_targets) == set(ldm_net.unet_modules)
    torch.manual_seed(0)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 32)

    def run(unet, **kwargs):
        ldm_net.zero_grad(set_to_none=True)
        out = unet(x, t, context=context, **kwargs)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in ldm_net.trainable_parameters()]

    ldm.requires_grad_(False)
    with ldm_net.attached():
        ref_out, ref_grads = run(ldm.model.diffusion_model)
    # the same LoRA modules, now attached to Forge's layers of the same names
    for name, lora in ldm_net.unet_modules.items():
        lora.make_override(forge_targets[name].module).install()
    with InplaceSafeNorms(forge_unet) as safe:
        assert safe.count == 16  # 6 down, 1 middle, 9 up transformer blocks (and their norm1 / norm2)
        out, grads = run(forge_unet, transformer_options={})
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-3)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_training_on_real_forge_classes_restores_everything(tmp_path, backend, arch):
    from lora_trainer.arch import get_adapter
    from lora_trainer.demo import demo_config, make_demo_dataset
    from lora_trainer.lora_file import load_lora
    from lora_trainer.lora_net.layouts import expected_lora_names
    from lora_trainer.testing.forge_layout import build_forge_engine
    from lora_trainer.train import train
    from lora_trainer.train.verify import model_state, state_differences

    engine = build_forge_engine(arch, FORGE_DIR, seed=2)
    root = get_adapter(engine).root_module
    before = model_state(root)
    data = make_demo_dataset(tmp_path / "data", count=2, repeats=2)
    config = demo_config(arch, data, tmp_path / "out", steps=3)
    config.save_precision, config.train_text_encoder, config.gradient_checkpointing = "fp32", True, True
    config.sdxl_unet_only = False  # SDXL defaults to the UNet only; this run covers both text encoders too
    config.conv_dim, config.conv_alpha = 2, 1.0
    result = train(engine, config)
    assert result.status == "completed", result.message
    tensors, _ = load_lora(result.final_file)
    names = {k.split(".")[0] for k in tensors}
    assert names <= set(expected_lora_names(arch, include_conv=True))
    assert any(n.startswith("lora_te") for n in names) and any(n.startswith("lora_unet") for n in names)
    assert state_differences(before, model_state(root)) == []


def _webui_prompts():
    from lora_trainer.prompts import PromptOptions

    return PromptOptions(max_token_length=225, weighted=True)  # emphasis parsed, as Forge does for a prompt


def _classic_engine(backend, encoder, tokenizer, **kwargs):
    """Forge's ClassicTextProcessingEngine over one of the test engine's towers. Outside a running Forge its only
    webui import, `modules.shared.opts`, is given the one option it reads (emphasis "Original", Forge's default)."""
    import sys
    import types

    saved = {k: sys.modules.get(k) for k in ("modules", "modules.shared")}
    shared = types.ModuleType("modules.shared")
    shared.opts = types.SimpleNamespace(emphasis="Original")
    package = types.ModuleType("modules")
    package.shared = shared
    sys.modules.update({"modules": package, "modules.shared": shared})
    try:
        from backend.text_processing.classic_engine import ClassicTextProcessingEngine  # binds `opts` at import
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module

    return ClassicTextProcessingEngine(text_encoder=encoder, tokenizer=tokenizer, embedding_dir=None, **kwargs)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_text_conditioning_equals_forges_classic_engine_sd1(backend, clip_skip):
    from lora_trainer.arch import get_adapter
    from lora_trainer.testing.forge_layout import build_forge_engine

    engine = build_forge_engine("sd1", FORGE_DIR, seed=6)
    clip = engine.forge_objects.clip
    classic = _classic_engine(backend, clip.cond_stage_model.clip_l, clip.tokenizer.clip_l, embedding_key="clip_l",
                              embedding_expected_shape=32, minimal_clip_skip=1, clip_skip=clip_skip,
                              return_pooled=False, final_layer_norm=True)
    long = ", ".join(f"tag{i} word" for i in range(40))  # > 75 tokens: three chunks, comma back-tracking
    adapter = get_adapter(engine)
    for caption in ["a photo of hero, (red cape:1.3), [blurry]", "hero", long]:  # one prompt each, as txt2img
        with torch.no_grad():
            ours = adapter.encode_text([caption], clip_skip=clip_skip, prompts=_webui_prompts()).context
            theirs = classic([caption])
        torch.testing.assert_close(ours, theirs)
    assert theirs.shape[1] == 3 * 77


def test_text_conditioning_equals_forges_classic_engine_sdxl(backend):
    from lora_trainer.arch import get_adapter
    from lora_trainer.testing.forge_layout import build_forge_engine

    engine = build_forge_engine("sdxl", FORGE_DIR, seed=7)
    clip = engine.forge_objects.clip
    common = dict(embedding_expected_shape=64, minimal_clip_skip=2, clip_skip=2, final_layer_norm=False)
    engine_l = _classic_engine(backend, clip.cond_stage_model.clip_l, clip.tokenizer.clip_l, embedding_key="clip_l",
                               text_projection=False, return_pooled=False, **common)
    engine_g = _classic_engine(backend, clip.cond_stage_model.clip_g, clip.tokenizer.clip_g, embedding_key="clip_g",
                               text_projection=True, return_pooled=True, **common)
    adapter = get_adapter(engine)
    for caption in ["a photo of hero, (red cape:1.3)", "hero, " + ", ".join(f"tag{i} word" for i in range(40))]:
        with torch.no_grad():
            ours = adapter.encode_text([caption], prompts=_webui_prompts())
            cond_l = engine_l([caption])
            cond_g, pooled = engine_g([caption])
        torch.testing.assert_close(ours.context, torch.cat([cond_l, cond_g], dim=2))  # sdxl.py
        torch.testing.assert_close(ours.pooled, pooled)
