"""Issue 4: saving, loading and validating kohya LoRA files."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save as safetensors_save

from lora_trainer.lora_file import LoRAFormatError, build_metadata, load_lora, save_lora
from lora_trainer.lora_net import LoRANetwork


def _trained_net(arch: str, **kwargs) -> LoRANetwork:
    net = LoRANetwork.create(tiny_model(arch), **{"rank": 4, "alpha": 2.0, **kwargs})
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return net


def _metadata(arch: str, **kwargs) -> dict:
    return build_metadata(arch, output_name="my_lora", rank=4, alpha=2.0, **kwargs)


def _independent_hashes(path, tensors: dict, metadata: dict) -> tuple:
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    model_hash = hashlib.sha256(data[8 + header_length:]).hexdigest()
    ss_only = safetensors_save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    return model_hash, hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_save_load_roundtrip_dtype_and_hashes(tmp_path, dtype):
    net = _trained_net("sd1", conv_rank=2, conv_alpha=1.0)
    tensors = net.kohya_state_dict()
    metadata = _metadata("sd1", conv_rank=2, conv_alpha=1.0, tag_frequency={"10_cat": {"cat": 3, "sofa": 1}})
    path = save_lora(tmp_path / "my_lora.safetensors", tensors, metadata, dtype=dtype)
    loaded, loaded_meta = load_lora(path)
    assert set(loaded) == set(tensors)
    assert all(t.dtype == dtype for t in loaded.values()), "every tensor, alpha included, is cast (kohya)"
    assert all(torch.equal(loaded[k], v.to(dtype)) for k, v in tensors.items())
    assert loaded["lora_unet_mid_block_attentions_0_proj_in.alpha"].dim() == 0
    assert {k: v for k, v in loaded_meta.items() if not k.startswith("sshs_")} == metadata
    assert (loaded_meta["sshs_model_hash"], loaded_meta["sshs_legacy_hash"]) == \
        _independent_hashes(path, loaded, metadata)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_lora.safetensors"], "no temp file left behind"


def test_legacy_hash_on_a_file_past_one_mib(tmp_path):
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(16, 40000), "lora_unet_x.lora_up.weight": torch.zeros(8, 16),
               "lora_unet_x.alpha": torch.tensor(8.0)}
    metadata = {"ss_network_dim": "16", "modelspec.title": "not hashed"}
    path = save_lora(tmp_path / "big.safetensors", tensors, metadata, dtype=torch.float32)
    loaded, meta = load_lora(path)
    assert (meta["sshs_model_hash"], meta["sshs_legacy_hash"]) == _independent_hashes(path, loaded, metadata)
    assert meta["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]


def test_never_overwrites_unless_asked_and_writes_atomically(tmp_path, monkeypatch):
    tensors = _trained_net("sd2").kohya_state_dict()
    path = save_lora(tmp_path / "a.safetensors", tensors, _metadata("sd2"))
    original = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_lora(path, tensors, _metadata("sd2", steps=2))
    assert path.read_bytes() == original
    save_lora(path, tensors, _metadata("sd2", steps=2), overwrite=True)
    assert load_lora(path)[1]["ss_steps"] == "2"

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_lora(tmp_path / "b.safetensors", tensors, _metadata("sd2"))
    with pytest.raises(OSError, match="disk full"):
        save_lora(path, tensors, _metadata("sd2"), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"] and load_lora(path)[1]["ss_steps"] == "2"


@pytest.mark.parametrize("arch,version,v2", [("sd1", "sd_v1", "False"), ("sd2", "sd_v2", "True"),
                                             ("sd2v", "sd_v2_v", "True"), ("sdxl", "sdxl_base_v1-0", "False")])
def test_metadata(arch, version, v2):
    meta = build_metadata(arch, output_name="cat", rank=8, alpha=4, conv_rank=4, conv_alpha=1, dropout=0.1,
                          training={"learning_rate": 1e-4, "ss_optimizer": "AdamW", "gradient_checkpointing": True},
                          tag_frequency={"5_cat": {"cat": 2}}, dataset_dirs={"5_cat": {"n_repeats": 5, "img_count": 2}},
                          bucket_info={"buckets": {"0": {"resolution": [512, 512], "count": 10}}},
                          resolution=(512, 768), session_id=42, training_started_at=1700000000.0, now=1700000100.0,
                          clip_skip=2)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert meta["ss_base_model_version"] == version and meta["ss_v2"] == v2
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_output_name"] == "cat"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_network_dropout"]) == ("8", "4.0", "0.1")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1", "dropout": 0.1}  # kohya
    assert meta["ss_learning_rate"] == "0.0001" and meta["ss_optimizer"] == "AdamW"
    assert meta["ss_gradient_checkpointing"] == "True" and meta["ss_clip_skip"] == "2"
    assert json.loads(meta["ss_tag_frequency"]) == {"5_cat": {"cat": 2}}
    assert json.loads(meta["ss_bucket_info"])["buckets"]["0"]["resolution"] == [512, 512]
    assert meta["ss_resolution"] == "(512, 768)" and meta["modelspec.resolution"] == "512x768"
    assert (meta["ss_session_id"], meta["ss_training_started_at"]) == ("42", "1700000000.0")
    assert meta["modelspec.architecture"].endswith("/lora")
    assert meta["modelspec.implementation"] == ("https://github.com/Stability-AI/generative-models"
                                                if arch == "sdxl" else "diffusers")
    assert meta["modelspec.prediction_type"] == ("v" if arch == "sd2v" else "epsilon")
    assert meta["modelspec.encoder_layer"] == "2" and meta["modelspec.title"] == "cat"
    assert meta["ss_v_parameterization"] == str(arch == "sd2v") and meta["modelspec.sai_model_spec"] == "1.0.1"
    plain = build_metadata(arch, output_name="x", rank=4, alpha=4)
    assert "ss_network_args" not in plain and plain["ss_clip_skip"] == "None"  # kohya: no network_args given


def test_load_rejects_what_is_not_a_lora(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(LoRAFormatError, match="not a safetensors file"):
        load_lora(junk)
    good = save_lora(tmp_path / "good.safetensors", _trained_net("sd1").kohya_state_dict(), _metadata("sd1"))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(LoRAFormatError, match="corrupt"):
        load_lora(truncated)
    checkpoint = tmp_path / "checkpoint.safetensors"
    checkpoint.write_bytes(safetensors_save({"model.diffusion_model.out.2.weight": torch.zeros(2, 2)}))
    with pytest.raises(LoRAFormatError, match="not a kohya LoRA"):
        load_lora(checkpoint)
    with pytest.raises(FileNotFoundError):
        load_lora(tmp_path / "missing.safetensors")


def test_load_back_onto_a_model_continues_exactly(tmp_path):
    net = _trained_net("sdxl", conv_rank=2, conv_alpha=3.0)
    path = save_lora(tmp_path / "x.safetensors", net.kohya_state_dict(), _metadata("sdxl"), dtype=torch.float32)
    tensors, _ = load_lora(path)
    fresh = LoRANetwork.create(tiny_model("sdxl"), rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0)
    assert fresh.load_kohya_state_dict(tensors) == {"missing": [], "unexpected": []}
    rebuilt = LoRANetwork.from_kohya_state_dict(tiny_model("sdxl"), tensors)
    for other in (fresh, rebuilt):
        state = other.kohya_state_dict()
        assert state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k]) for k in tensors)
    assert fresh.loras["lora_unet_input_blocks_1_0_in_layers_2"].alpha == 3.0, "alpha comes from the file"
    assert rebuilt.config == dict(rank=4, alpha=2.0, conv_rank=2, conv_alpha=3.0, dropout=0.0)


def test_load_errors_name_the_first_mismatch_and_the_cause():
    sd1 = LoRANetwork.create(tiny_model("sd1"), rank=4)
    with pytest.raises(LoRAFormatError, match=r"^lora_te1_text_model_encoder_layers_0_mlp_fc1\.lora_down\.weight: "
                                              r"no such LoRA module .* looks like a sdxl LoRA"):
        sd1.load_kohya_state_dict(_trained_net("sdxl").kohya_state_dict())
    with pytest.raises(LoRAFormatError, match=r"^lora_te_text_model_encoder_layers_2_mlp_fc1\.lora_down\.weight: "
                                              r"missing from the file .* text-encoder depth"):
        sd1.load_kohya_state_dict(_trained_net("sd2").kohya_state_dict())  # tiny SD2: 2 TE layers, SD1: 3
    with pytest.raises(LoRAFormatError, match=r"^lora_te_text_model_encoder_layers_0_mlp_fc1\.lora_down\.weight: the "
                                              r"file has rank 8, the network rank 4"):
        sd1.load_kohya_state_dict(_trained_net("sd1", rank=8).kohya_state_dict())
    with pytest.raises(LoRAFormatError, match="conv"):
        sd1.load_kohya_state_dict(_trained_net("sd1", conv_rank=2).kohya_state_dict())
    unet_only = {k: v for k, v in _trained_net("sd1").kohya_state_dict().items() if k.startswith("lora_unet_")}
    with pytest.raises(LoRAFormatError, match="train_text_encoder=False"):
        sd1.load_kohya_state_dict(unet_only)
    assert len(sd1.load_kohya_state_dict(unet_only, strict=False)["missing"]) == 18
    with pytest.raises(LoRAFormatError, match="hada_w1_a"):
        sd1.load_kohya_state_dict({"lora_unet_x.hada_w1_a": torch.zeros(1)})


def test_sd2_projections_saved_as_1x1_convs_load_into_linear_layers():
    sd2 = _trained_net("sd2")
    tensors = sd2.kohya_state_dict()
    as_conv = {k: (v[..., None, None] if "proj_in.lora" in k or "proj_out.lora" in k else v)
               for k, v in tensors.items()}
    assert as_conv["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"].dim() == 4
    fresh = LoRANetwork.create(tiny_model("sd2"), rank=4, alpha=2.0)
    fresh.load_kohya_state_dict(as_conv)
    assert all(torch.equal(fresh.kohya_state_dict()[k], v) for k, v in tensors.items())
