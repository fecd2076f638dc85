"""Issue 4: the LoRA key set of each architecture is complete and exact, and an independent loader (diffusers'
kohya conversion) maps every key with none left over."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from conftest import tiny_model

from lora_trainer.arch import model_parts
from lora_trainer.lora_net import LoRANetwork
from lora_trainer.lora_net.layouts import expected_lora_names, unet_paths
from lora_trainer.lora_net.naming import sd_unet_path_to_diffusers
from lora_trainer.lora_net.targets import unet_targets

TINY_UNET_LAYOUT = {  # lora_trainer/testing: tiny_sd.py / tiny_sdxl.py
    "sd1": dict(channel_mult=(1, 1, 2, 2), depths=(1, 1, 1, 0), middle_depth=1),
    "sd2": dict(channel_mult=(1, 1, 2, 2), depths=(1, 1, 1, 0), middle_depth=1),
    "sdxl": dict(channel_mult=(1, 2, 2), depths=(0, 1, 2), middle_depth=2),
}
PER_TRANSFORMER_BLOCK = 10  # attn1/attn2 q,k,v,out + ff.net.0.proj + ff.net.2
PER_SPATIAL_TRANSFORMER = 2  # proj_in, proj_out
PER_TEXT_LAYER = 6  # q, k, v, out, fc1, fc2



def _spatial_transformers(unet):
    return [m for m in unet.modules() if hasattr(m, "transformer_blocks") and hasattr(m, "proj_in")]


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_key_set_is_complete_and_exact(arch):
    model = tiny_model(arch)
    parts = model_parts(model)
    net = LoRANetwork.create(model, rank=4, alpha=2.0)
    transformers = _spatial_transformers(parts.unet)
    blocks = sum(len(t.transformer_blocks) for t in transformers)
    expected_unet = blocks * PER_TRANSFORMER_BLOCK + len(transformers) * PER_SPATIAL_TRANSFORMER
    assert len(net.unet_modules) == expected_unet == 192  # SD1/SD2: 16 × 12; tiny SDXL: 17 × 10 + 11 × 2
    if arch != "sdxl":
        assert len(transformers) == 16 and blocks == 16
    else:
        assert len(transformers) == 11 and blocks == 17

    layers = {te.prefix: te.num_layers for te in parts.text_encoders}
    assert layers == {"sd1": {"lora_te": 3}, "sd2": {"lora_te": 2}, "sdxl": {"lora_te1": 3, "lora_te2": 3}}[arch]
    assert len(net.text_encoder_modules) == PER_TEXT_LAYER * sum(layers.values()) == {"sd1": 18, "sd2": 12,
                                                                                         "sdxl": 36}[arch]
    for prefix, n in layers.items():
        assert sum(name.startswith(prefix + "_text_model_encoder_layers_") for name in net.text_encoder_modules) \
            == n * PER_TEXT_LAYER

    keys = set(net.kohya_state_dict())
    names = set(net.unet_modules) | set(net.text_encoder_modules)
    assert keys == {f"{n}.{part}" for n in names for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    unet_style = "lora_unet_input_blocks_" if arch == "sdxl" else "lora_unet_down_blocks_"
    assert all(n.startswith(("lora_te", unet_style, "lora_unet_mid", "lora_unet_up", "lora_unet_output",
                             "lora_unet_middle")) for n in names)
    assert all(n in expected_lora_names(arch) for n in names), "every tiny-model name is a real-architecture name"


def test_known_names():
    sd1 = set(LoRANetwork.create(tiny_model("sd1"), rank=2, conv_rank=2).loras)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in sd1
    assert "lora_unet_mid_block_attentions_0_proj_in" in sd1
    assert "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj" in sd1
    assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0" in sd1
    assert {"lora_unet_down_blocks_0_resnets_0_conv1", "lora_unet_down_blocks_3_resnets_1_time_emb_proj",
            "lora_unet_down_blocks_2_downsamplers_0_conv", "lora_unet_up_blocks_0_upsamplers_0_conv",
            "lora_unet_up_blocks_2_upsamplers_0_conv", "lora_unet_up_blocks_3_resnets_2_conv_shortcut",
            "lora_unet_mid_block_resnets_1_conv2"} <= sd1
    assert "lora_te_text_model_encoder_layers_2_mlp_fc2" in sd1
    sd2 = set(LoRANetwork.create(tiny_model("sd2"), rank=2).text_encoder_modules)
    assert {f"lora_te_text_model_encoder_layers_1_self_attn_{r}_proj" for r in "qkv"} <= sd2
    assert not any("layers_2_" in n for n in sd2), "SD2 runs the penultimate layer: the last block gets no LoRA"
    xl = set(LoRANetwork.create(tiny_model("sdxl"), rank=2, conv_rank=2).loras)
    assert {"lora_unet_input_blocks_4_1_proj_in", "lora_unet_middle_block_1_transformer_blocks_1_ff_net_0_proj",
            "lora_unet_output_blocks_5_1_transformer_blocks_0_attn1_to_out_0", "lora_unet_input_blocks_3_0_op",
            "lora_unet_output_blocks_2_2_conv", "lora_unet_input_blocks_1_0_in_layers_2",
            "lora_unet_input_blocks_4_0_skip_connection", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            "lora_te2_text_model_encoder_layers_2_self_attn_out_proj",
            "lora_te2_text_model_encoder_layers_2_mlp_fc1"} <= xl


def test_sd_unet_path_mapping():
    assert sd_unet_path_to_diffusers("input_blocks.4.1.proj_in") == "down_blocks.1.attentions.0.proj_in"
    assert sd_unet_path_to_diffusers("input_blocks.11.0.in_layers.2") == "down_blocks.3.resnets.1.conv1"
    assert sd_unet_path_to_diffusers("input_blocks.9.0.op") == "down_blocks.2.downsamplers.0.conv"
    assert sd_unet_path_to_diffusers("middle_block.2.emb_layers.1") == "mid_block.resnets.1.time_emb_proj"
    assert sd_unet_path_to_diffusers("output_blocks.7.1.proj_out") == "up_blocks.2.attentions.1.proj_out"
    assert sd_unet_path_to_diffusers("output_blocks.2.1.conv") == "up_blocks.0.upsamplers.0.conv"
    assert sd_unet_path_to_diffusers("output_blocks.8.2.conv") == "up_blocks.2.upsamplers.0.conv"
    assert sd_unet_path_to_diffusers("output_blocks.0.0.skip_connection") == "up_blocks.0.resnets.0.conv_shortcut"
    with pytest.raises(ValueError, match="input_blocks.0.0"):
        sd_unet_path_to_diffusers("input_blocks.0.0")


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_live_walk_matches_layout_with_conv(arch):
    model = tiny_model(arch)
    walked = [t.path for t in unet_targets(model.model.diffusion_model, arch, include_conv=True)]
    assert sorted(walked) == sorted(unet_paths(**TINY_UNET_LAYOUT[arch]))
    net = LoRANetwork.create(model, rank=4, conv_rank=2, conv_alpha=1.0, train_text_encoder=False)
    resblocks = [m for m in model.model.diffusion_model.modules() if hasattr(m, "in_layers")]
    skips = sum(type(m.skip_connection).__name__ == "Conv2d" for m in resblocks)
    samplers = {"sd1": 6, "sd2": 6, "sdxl": 4}[arch]  # 3 (2) down + 3 (2) up
    assert len(net.unet_modules) == 192 + 3 * len(resblocks) + skips + samplers
    assert len(net.unet_modules) == {"sd1": 277, "sd2": 277, "sdxl": 257}[arch]
    ranks = {n: m.rank for n, m in net.unet_modules.items()}
    assert ranks["lora_unet_down_blocks_0_resnets_0_conv1" if arch != "sdxl" else
                 "lora_unet_input_blocks_1_0_in_layers_2"] == 2  # 3×3: conv rank
    assert ranks["lora_unet_mid_block_resnets_0_time_emb_proj" if arch != "sdxl" else
                 "lora_unet_middle_block_0_emb_layers_1"] == 4  # Linear: rank


def test_real_architecture_counts():
    def count(arch, conv):
        parts: dict = {}
        for part in expected_lora_names(arch, include_conv=conv).values():
            parts[part] = parts.get(part, 0) + 1
        return parts

    assert count("sd1", False) == {"unet": 192, "lora_te": 72}
    assert count("sd2", False) == {"unet": 192, "lora_te": 138}
    assert count("sdxl", False) == {"unet": 722, "lora_te1": 72, "lora_te2": 192}  # 70 × 10 + 11 × 2
    assert count("sd1", True)["unet"] == 192 + 22 * 3 + 14 + 6  # 22 ResBlocks, 14 1×1 shortcuts, 3 down + 3 up


def _diffusers_unet(arch):
    from diffusers import UNet2DConditionModel

    if arch == "sd1":
        return UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4), use_linear_projection=True)


def _diffusers_module_path(key: str) -> str:
    path = key.split(".", 1)[1].replace(".processor", "")
    path = re.sub(r"\.to_out_lora\.(down|up)\.weight$", ".to_out.0", path)
    path = re.sub(r"\.(to_q|to_k|to_v)_lora\.(down|up)\.weight$", r".\1", path)
    return re.sub(r"\.lora(_linear_layer)?\.(down|up)\.weight$", "", path)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_diffusers_kohya_conversion_maps_every_key(arch):
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    net = LoRANetwork.create(tiny_model(arch), rank=4, alpha=2.0, conv_rank=2)
    state = net.kohya_state_dict()
    if arch == "sdxl":
        state = _maybe_map_sgm_blocks_to_diffusers(dict(state), SimpleNamespace(layers_per_block=2))
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(state))  # raises on any leftover key
    assert len(converted) == 2 * len(net.loras) and len(alphas) == len(net.loras)

    # and every converted UNet name is a real layer of a diffusers UNet of the same shape
    unet_modules = dict(_diffusers_unet(arch).named_modules())
    unet_keys = [k for k in converted if k.startswith("unet.") and ".down." in k]
    assert len(unet_keys) == len(net.unet_modules)
    for key in unet_keys:
        module = unet_modules.get(_diffusers_module_path(key))
        assert module is not None, key
        in_width = module.in_features if hasattr(module, "in_features") else module.in_channels
        assert converted[key].shape[1] == in_width, key
    te_prefixes = {"sd1": {"text_encoder."}, "sdxl": {"text_encoder.", "text_encoder_2."}}[arch]
    assert {k.split("text_model")[0] for k in converted if not k.startswith("unet.")} == te_prefixes
