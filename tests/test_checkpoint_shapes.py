"""Sizes read from full-size state-dict shapes (built on the meta device: no memory, no download) are the real
SD1 / SD2 / SDXL configs, including the 12-head CLIP-L, 16-head OpenCLIP-H and 20-head OpenCLIP-bigG text towers."""

from __future__ import annotations

import torch

from lora_trainer.checkpoint.shapes import clip_text_sizes, open_clip_text_sizes, unet_head_channels, unet_sizes
from lora_trainer.testing.tiny_sd import tiny_unet_params


def _meta_state(module_fn, prefix):
    with torch.device("meta"):
        module = module_fn()
    return {prefix + k: v for k, v in module.state_dict().items()}


def test_full_size_ldm_unets():
    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    for v2, context in ((False, 768), (True, 1024)):
        sd = _meta_state(lambda c=context, v=v2: UNetModel(**tiny_unet_params(c, v, full=True)),
                         "model.diffusion_model.")
        sizes = unet_sizes(sd, "x")
        assert sizes["model_channels"] == 320 and sizes["channel_mult"] == [1, 2, 4, 4]
        assert sizes["attention_resolutions"] == [1, 2, 4] and sizes["num_res_blocks"] == 2
        assert sizes["transformer_depth"] == [1, 1, 1, 0] and sizes["middle_depth"] == 1
        assert sizes["context_dim"] == context and sizes["use_linear"] == v2 and sizes["adm_in_channels"] is None
    assert unet_head_channels(320) == 64  # SD2 / SDXL: 64-channel heads


def test_full_size_sdxl_unet():
    from lora_trainer.testing.sgm_layout import UNetModel

    sd = _meta_state(lambda: UNetModel(4, 320, 4, 2, [4, 2], [1, 2, 4], 64, [0, 2, 10], 2048, 2816),
                     "model.diffusion_model.")
    sizes = unet_sizes(sd, "x")
    assert sizes["channel_mult"] == [1, 2, 4] and sizes["transformer_depth"] == [0, 2, 10]
    assert sizes["middle_depth"] == 10 and sizes["context_dim"] == 2048 and sizes["adm_in_channels"] == 2816


def test_full_size_text_towers():
    from transformers import CLIPTextConfig, CLIPTextModel

    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    sd = _meta_state(lambda: CLIPTextModel(clip_l), "cond_stage_model.transformer.")
    assert clip_text_sizes(sd, "cond_stage_model.transformer.text_model.") == dict(
        vocab_size=49408, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=77)

    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from open_clip.model import _build_text_tower

    for width, layers, heads in ((1024, 24, 16), (1280, 32, 20)):
        cfg = {"context_length": 77, "vocab_size": 49408, "width": width, "heads": heads, "layers": layers}
        sd = _meta_state(lambda w=width, c=cfg: _build_text_tower(w, c), "m.")
        sizes = open_clip_text_sizes(sd, "m.")
        assert (sizes["width"], sizes["layers"], sizes["heads"], sizes["mlp_ratio"]) == (width, layers, heads, 4)
