"""Forge's model layout without a Forge checkout: the same modules behind Forge's engine/patcher attributes.

A LoRA trained on Forge's layout must carry exactly the kohya keys A1111 writes for the same architecture (so the
file loads in A1111, ComfyUI, kohya and diffusers), the adapter must compute what the ldm/sgm path computes from
the same weights, and a run must train and leave every module as it found it. Forge's own classes: test_forge_real.py.
"""

from __future__ import annotations

import pytest
import torch

from lora_trainer.arch import UnsupportedModel, detect_arch, get_adapter
from lora_trainer.arch.adapters import SizeConditioning
from lora_trainer.demo import demo_config, make_demo_dataset
from lora_trainer.lora_file import load_lora
from lora_trainer.lora_net import LoRANetwork
from lora_trainer.lora_net.layouts import expected_lora_names
from lora_trainer.testing import TINY_ARCHS
from lora_trainer.testing.forge_layout import build_forge_standin
from lora_trainer.train import train
from lora_trainer.train.verify import model_state, state_differences

_cache: dict = {}


def standin(arch):
    if arch not in _cache:
        _cache[arch] = build_forge_standin(arch)
    return _cache[arch]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_detects_arch_from_forge_engine(arch):
    assert detect_arch(standin(arch)) == arch


def test_refuses_unloaded_and_other_engines():
    empty = type("StableDiffusion", (), {})()
    empty.forge_objects = None
    with pytest.raises(UnsupportedModel, match="first generation"):
        detect_arch(empty)
    flux = type("Flux", (), {})()
    flux.forge_objects = standin("sd1").forge_objects
    with pytest.raises(UnsupportedModel, match="Flux"):
        detect_arch(flux)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_kohya_keys_match_the_a1111_layout(arch):
    """Same architecture, A1111 (ldm/sgm, OpenCLIP fused attention) vs Forge (HF towers): identical key sets."""
    engine = standin(arch)
    forge = LoRANetwork.create(engine, rank=4, alpha=2.0, conv_rank=2, train_text_encoder=True)
    a1111 = LoRANetwork.create(engine.a1111_layout, rank=4, alpha=2.0, conv_rank=2, train_text_encoder=True)
    assert set(forge.kohya_state_dict()) == set(a1111.kohya_state_dict())
    assert all(name in expected_lora_names(arch) for name in forge.loras)
    if arch == "sdxl":
        assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" in forge.loras


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_unet_prediction_equals_the_a1111_path(arch):
    """The UNet and VAE are shared, so with the same text conditioning both adapters must predict the same."""
    engine = standin(arch)
    forge, a1111 = get_adapter(engine), get_adapter(engine.a1111_layout)
    torch.manual_seed(0)
    noisy, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    if arch == "sd1":  # SD1's text encoder is shared too: the text path must agree as well
        text = forge.encode_text(["a photo of hero", "hero"])
        ref = a1111.encode_text(["a photo of hero", "hero"])
        torch.testing.assert_close(text.context, ref.context)
        torch.testing.assert_close(forge.predict(noisy, t, text), a1111.predict(noisy, t, ref))
    else:
        text = a1111.encode_text(["a photo of hero", "hero"])
        hw = torch.tensor([[64.0, 48.0], [64.0, 64.0]])
        sizes = SizeConditioning(hw, torch.tensor([[0.0, 8.0], [0.0, 0.0]]), hw)
        torch.testing.assert_close(forge.size_vector(sizes, "cpu"), a1111.size_vector(sizes, "cpu"))
        torch.testing.assert_close(forge.predict(noisy, t, text, sizes), a1111.predict(noisy, t, text, sizes))
    torch.testing.assert_close(forge.alphas_cumprod("cpu"), a1111.alphas_cumprod("cpu"))
    torch.manual_seed(1)
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.manual_seed(2)
    lat_forge = forge.encode_images(images)
    torch.manual_seed(2)
    torch.testing.assert_close(lat_forge, a1111.encode_images(images))


def test_sd2v_prediction_type_comes_from_the_predictor():
    assert get_adapter(standin("sd2v")).prediction_type == "v"
    assert get_adapter(standin("sd2")).prediction_type == "epsilon"


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_training_on_forge_layout_writes_a1111_keys_and_restores(tmp_path, arch):
    engine = build_forge_standin(arch, seed=3)
    adapter = get_adapter(engine)
    before = model_state(adapter.root_module)
    data = make_demo_dataset(tmp_path / "data", count=2, repeats=2)
    config = demo_config(arch, data, tmp_path / "out", steps=3)
    config.save_precision, config.train_text_encoder, config.gradient_checkpointing = "fp32", True, True
    config.sdxl_unet_only = False  # SDXL defaults to the UNet only; this run covers both text encoders too
    result = train(engine, config)
    assert result.status == "completed", result.message
    tensors, _ = load_lora(result.final_file)
    names = {key.split(".")[0] for key in tensors}
    reference = LoRANetwork.create(engine.a1111_layout, rank=config.network_dim, alpha=config.network_alpha,
                                   train_text_encoder=True)
    assert names == set(reference.loras)
    assert any(tensors[k].abs().sum() > 0 for k in tensors if k.endswith("lora_up.weight")), "it trained"
    assert state_differences(before, model_state(adapter.root_module)) == []


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_pivotal_tuning_on_forge_layout_trains_the_vectors_and_restores(tmp_path, arch):
    from lora_trainer.pivotal import PivotalEmbeddings, read_bundle

    engine = build_forge_standin(arch, seed=4)
    adapter = get_adapter(engine)
    before = model_state(adapter.root_module)
    data = make_demo_dataset(tmp_path / "data", count=2, repeats=2)
    config = demo_config(arch, data, tmp_path / "out", steps=2)
    config.save_precision, config.train_text_encoder = "fp32", False
    config.pivotal_tuning, config.pivotal_token, config.pivotal_frac = True, "zkw", 1.0
    config.pivotal_embeddings_dir = str(tmp_path / "embeddings")
    result = train(engine, config)
    assert result.status == "completed", result.message
    tensors, _ = load_lora(result.final_file)
    bundled = read_bundle(tensors)["zkw"]
    vectors = bundled if isinstance(bundled, dict) else {"clip_l": bundled}
    assert sorted(vectors) == (["clip_g", "clip_l"] if arch == "sdxl" else ["clip_l"])
    assert all(v.shape[0] == config.pivotal_vectors_per_token for v in vectors.values())
    initial = PivotalEmbeddings.create(adapter, config).tensors()
    assert all(not torch.equal(vectors[k], initial[k]) for k in vectors), "the vectors did not train"
    assert (tmp_path / "embeddings" / "zkw.safetensors").is_file()
    assert state_differences(before, model_state(adapter.root_module)) == []
