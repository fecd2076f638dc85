"""The Forge host's run bracket (ui/forge_session.py) on Forge's real memory manager and patchers (FORGE_DIR)."""

from __future__ import annotations

import os

import pytest
import torch

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not FORGE_DIR, reason="FORGE_DIR is not set")


@pytest.fixture(scope="module")
def mm():
    try:
        from lora_trainer.testing.forge_layout import import_forge_backend

        import_forge_backend(FORGE_DIR)
    except ImportError as exc:
        pytest.skip(f"Forge's backend does not import here ({exc}); use Forge's pins")
    from backend import memory_management

    return memory_management


def _engine(seed=0):
    from lora_trainer.testing.forge_layout import build_forge_engine

    return build_forge_engine("sd1", FORGE_DIR, seed=seed)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _apply_lora_like_forge(engine, mm, key, delta):
    """What sd_forge_lora does for `<lora:x:1>`: clone the patchers, add patches, load (which merges them)."""
    from backend.diffusion_engine.base import ForgeObjects

    unet = engine.forge_objects_original.unet.clone()
    unet.add_patches(filename="x.safetensors", patches={key: (delta,)})
    objects = engine.forge_objects_original
    engine.forge_objects = ForgeObjects(unet, objects.clip, objects.vae, None)
    engine.forge_objects_after_applying_lora = engine.forge_objects.shallow_copy()
    engine.current_lora_hash = str([["x.safetensors", 1.0, 1.0, False]])
    mm.load_models_gpu([unet])


def test_refuses_quantized_storage_and_streaming_naming_the_setting(mm, monkeypatch):
    from lora_trainer.ui.forge_session import ForgeRefused, ForgeSession, unsupported_reason

    engine = _engine()
    assert unsupported_reason(engine, mm) == ""
    monkeypatch.setattr(engine.forge_objects.unet.model, "storage_dtype", torch.float8_e4m3fn)
    assert "Diffusion in Low Bits" in unsupported_reason(engine, mm)
    with pytest.raises(ForgeRefused, match="Diffusion in Low Bits"):
        ForgeSession(engine, mm).begin()
    monkeypatch.undo()
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.LOW_VRAM)
    assert "GPU Weights (MB)" in unsupported_reason(engine, mm)


def test_unpatches_forge_loras_trains_clean_and_leaves_none(mm, tmp_path):
    from lora_trainer.demo import demo_config, make_demo_dataset
    from lora_trainer.train import train
    from lora_trainer.ui.forge_session import ForgeSession

    engine = _engine(seed=4)
    unet_module = engine.forge_objects.unet.model
    clean = _weights(unet_module)
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    _apply_lora_like_forge(engine, mm, key, torch.full_like(clean[key], 0.5))
    assert not torch.equal(unet_module.state_dict()[key], clean[key]), "Forge merged the LoRA"
    loaded_before = {id(e.model.model) for e in mm.current_loaded_models}
    original = engine.forge_objects_original.unet
    options_before = (dict(original.model_options), dict(original.object_patches), dict(original.lora_patches))

    # Forge's text engine moves position_ids / embeddings under inference_mode at every generation
    embeddings = engine.forge_objects.clip.cond_stage_model.clip_l.transformer.text_model.embeddings
    with torch.inference_mode():
        embeddings.position_ids = embeddings.position_ids.clone()
        embeddings.token_embedding.weight = torch.nn.Parameter(embeddings.token_embedding.weight.clone(),
                                                               requires_grad=False)
    assert embeddings.position_ids.is_inference()
    session = ForgeSession(engine, mm).begin()
    assert all(torch.equal(v, clean[k]) for k, v in unet_module.state_dict().items()), "back to clean weights"
    assert not any(t.is_inference() for t in engine.forge_objects.clip.cond_stage_model.state_dict().values())
    assert engine.forge_objects.unet is original and unet_module.lora_loader.backup == {}
    data = make_demo_dataset(tmp_path / "data", count=2, repeats=1)
    config = demo_config("sd1", data, tmp_path / "out", steps=2)
    config.save_precision, config.train_text_encoder = "fp32", True
    result = train(engine, config)
    session.end()

    assert result.status == "completed", result.message
    assert all(torch.equal(v, clean[k]) for k, v in unet_module.state_dict().items()), "no LoRA left merged"
    assert engine.current_lora_hash == str([]) and unet_module.lora_loader.loaded_hash == str([])
    assert engine.forge_objects.unet is original and engine.forge_objects_after_applying_lora.unet is original
    assert (dict(original.model_options), dict(original.object_patches), dict(original.lora_patches)) == \
        options_before
    assert {id(e.model.model) for e in mm.current_loaded_models} == loaded_before
    # and the next generation with the same tag merges it again, through Forge's own path
    _apply_lora_like_forge(engine, mm, key, torch.full_like(clean[key], 0.5))
    assert not torch.equal(unet_module.state_dict()[key], clean[key])
    ForgeSession(engine, mm).end()


def test_unloads_only_what_it_loaded(mm):
    from lora_trainer.ui.forge_session import ForgeSession

    engine = _engine(seed=5)
    before = [e.model for e in mm.current_loaded_models]
    session = ForgeSession(engine, mm).begin()
    objects = engine.forge_objects
    loaded = [e.model for e in mm.current_loaded_models]
    assert all(any(p is q for q in loaded) for p in (objects.unet, objects.clip.patcher, objects.vae.patcher))
    session.end()
    assert [e.model for e in mm.current_loaded_models] == before
