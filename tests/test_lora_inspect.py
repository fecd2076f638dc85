"""Issue 4: `python -m lora_trainer inspect FILE` reports each architecture's file and refuses bad files clearly."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save as safetensors_save

from lora_trainer.__main__ import main
from lora_trainer.lora_file import build_metadata, save_lora
from lora_trainer.lora_net import LoRANetwork


def _save(tmp_path, arch: str, tensors=None, metadata=None, name: str | None = None, **net_kwargs):
    if tensors is None:
        tensors = LoRANetwork.create(tiny_model("sd2" if arch == "sd2v" else arch), rank=4, alpha=2.0,
                                     **net_kwargs).kohya_state_dict()
    if metadata is None:
        metadata = build_metadata(arch, output_name=name or arch, rank=4, alpha=2.0,
                                  tag_frequency={"10_cat": {"cat": 5, "sofa": 2}, "3_dog": {"cat": 1}})
    return save_lora(tmp_path / f"{name or arch}.safetensors", tensors, metadata)


@pytest.mark.parametrize("arch,parts", [
    ("sd1", [r"lora_te +18 modules, rank 4, alpha 2\n", r"unet +192 modules, rank 4, alpha 2\n"]),
    ("sd2v", [r"lora_te +12 modules, rank 4, alpha 2\n", r"unet +192 modules, rank 4, alpha 2\n"]),
    ("sdxl", [r"lora_te1 +18 modules", r"lora_te2 +18 modules", r"unet +192 modules"]),
])
def test_inspect_reports_each_architecture(tmp_path, capsys, arch, parts):
    path = _save(tmp_path, arch)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Architecture:  {arch} " in out and "dtype float16" in out
    for pattern in parts:
        assert re.search(pattern, out), pattern
    assert f"ss_output_name           {arch}" in out and "Top tags:      cat (6), sofa (2)" in out
    assert "Verdict:       compatible" in out


def test_inspect_reports_conv_ranks_separately(tmp_path, capsys):
    tensors = LoRANetwork.create(tiny_model("sd1"), rank=8, alpha=4.0, conv_rank=2, conv_alpha=1.0).kohya_state_dict()
    assert main(["inspect", str(_save(tmp_path, "sd1", tensors=tensors))]) == 0
    out = capsys.readouterr().out
    assert re.search(r"unet conv3x3 +50 modules, rank 2, alpha 1\n", out)
    assert re.search(r"unet +227 modules, rank 8, alpha 4\n", out) and re.search(r"unet total +277 modules", out)


def test_inspect_explains_what_a1111_would_not_apply(tmp_path, capsys):
    tensors = LoRANetwork.create(tiny_model("sd2"), rank=4).kohya_state_dict()
    broken = {k: v for k, v in tensors.items() if not k.startswith("lora_te_text_model_encoder_layers_1_self_attn_q")}
    del broken["lora_unet_up_blocks_1_attentions_0_proj_out.alpha"]
    broken["bundle_emb.cat.string_to_param.*"] = torch.zeros(1, 4)  # the webui loads these: a note, no problem
    broken["emb_params"] = torch.zeros(1, 4)
    broken["lora_unet_conv_in.lora_down.weight"] = torch.zeros(4, 4, 3, 3)
    broken["lora_unet_conv_in.lora_up.weight"] = torch.zeros(4, 4, 1, 1)
    broken["lora_unet_conv_in.alpha"] = torch.tensor(4.0)
    assert main(["inspect", str(_save(tmp_path, "sd2", tensors=broken))]) == 1
    out = capsys.readouterr().out
    assert "NOT compatible" in out
    assert "1 keys with an unknown prefix (first: emb_params)" in out
    assert "bundled embeddings (the webui loads them with the LoRA): cat" in out
    assert "1 modules without alpha (first: lora_unet_up_blocks_1_attentions_0_proj_out)" in out
    assert "not layers of sd2 under kohya/A1111 naming (first: lora_unet_conv_in)" in out
    assert "without all of q/k/v/out_proj (A1111 skips them) (first: lora_te_text_model_encoder_layers_1)" in out


def test_inspect_flags_missing_version_metadata(tmp_path, capsys):
    path = _save(tmp_path, "sdxl", metadata={"ss_output_name": "x"}, name="no_version")
    assert main(["inspect", str(path)]) == 1
    assert "A1111 hides it for SDXL models" in capsys.readouterr().out


@pytest.mark.parametrize("content,message", [
    (b"\x00" * 3, "too short"),
    (b"PK\x03\x04" + b"\x00" * 60, "not a safetensors file"),
    (safetensors_save({"model.diffusion_model.out.2.weight": torch.zeros(2)}), "not a kohya LoRA"),
], ids=["truncated", "zip", "checkpoint"])
def test_inspect_refuses_non_lora_and_corrupt_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_architecture_comes_from_real_layer_widths(tmp_path, capsys):
    from lora_trainer.lora_net.layouts import guess_arch

    assert guess_arch({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
                       (4, 1024)}, {"ss_base_model_version": "sd_v2_v"})[0] == "sd2v"
    assert guess_arch({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)})[0] == "sd1"
    assert guess_arch({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32)})[0] == "sdxl"
    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    tensors = {f"{name}.lora_down.weight": torch.zeros(4, 2048), f"{name}.lora_up.weight": torch.zeros(640, 4),
               f"{name}.alpha": torch.tensor(4.0)}
    path = _save(tmp_path, "sd1", tensors=tensors, name="mislabelled")  # SD1 metadata on an SDXL-shaped file
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Architecture:  sdxl (cross-attention input width 2048)" in out
    assert "metadata says sd_v1 but the tensors are sdxl" in out
