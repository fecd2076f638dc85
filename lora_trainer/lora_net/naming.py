"""Module path on the webui's (compvis/SGM) model → kohya LoRA name (kohya-lora-format.md §1.2, §7).

SD1/SD2 UNet: diffusers-style names (what kohya, diffusers and A1111 all read); SDXL UNet: the SGM path itself;
text encoders: HF CLIP names (OpenCLIP's fused attention becomes four `self_attn_{q,k,v,out}_proj` names).
"""

from __future__ import annotations

UNET_PREFIX = "lora_unet"
# ResBlock leaf (compvis) → diffusers ResnetBlock2D leaf
RESNET_LEAVES = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
                 "skip_connection": "conv_shortcut"}
HF_CLIP_LEAVES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                  "mlp.fc1", "mlp.fc2")
OPEN_CLIP_ATTENTION_ROLES = ("q", "k", "v", "out")


def kohya_name(prefix: str, path: str) -> str:
    return f"{prefix}_{path.replace('.', '_')}"


def _resnet(block: str, leaf: str, path: str) -> str:
    if leaf not in RESNET_LEAVES:
        raise ValueError(f"no kohya name for ResBlock layer {path!r}")
    return f"{block}.{RESNET_LEAVES[leaf]}"


def sd_unet_path_to_diffusers(path: str) -> str:
    """`input_blocks.1.1.proj_in` → `down_blocks.0.attentions.0.proj_in` (SD1/SD2 layout: 2 res blocks per level)."""
    parts = path.split(".")
    try:
        block, index = parts[0], int(parts[1])
        if block == "middle_block":
            leaf = ".".join(parts[2:])
            if index == 1:
                return f"mid_block.attentions.0.{leaf}"
            if index in (0, 2):
                return _resnet(f"mid_block.resnets.{index // 2}", leaf, path)
        elif block in ("input_blocks", "output_blocks"):
            inner, leaf = int(parts[2]), ".".join(parts[3:])
            if block == "input_blocks" and index > 0:
                level, layer = divmod(index - 1, 3)
                if layer == 2:  # the level's Downsample
                    if leaf == "op":
                        return f"down_blocks.{level}.downsamplers.0.conv"
                elif inner == 0:
                    return _resnet(f"down_blocks.{level}.resnets.{layer}", leaf, path)
                elif inner == 1:
                    return f"down_blocks.{level}.attentions.{layer}.{leaf}"
            elif block == "output_blocks":
                level, layer = divmod(index, 3)
                if leaf == "conv":  # Upsample: output_blocks.{3i+2}.{1 or 2}.conv; no attention leaf is bare "conv"
                    return f"up_blocks.{level}.upsamplers.0.conv"
                if inner == 0:
                    return _resnet(f"up_blocks.{level}.resnets.{layer}", leaf, path)
                return f"up_blocks.{level}.attentions.{layer}.{leaf}"
    except (IndexError, ValueError):
        pass
    raise ValueError(f"no kohya name for SD UNet path {path!r}")


def unet_lora_name(arch: str, path: str) -> str:
    """Kohya name of a UNet module given its path under `model.diffusion_model`."""
    if arch == "sdxl":
        return kohya_name(UNET_PREFIX, path)
    return kohya_name(UNET_PREFIX, sd_unet_path_to_diffusers(path))


def hf_clip_lora_name(prefix: str, layer: int, leaf: str) -> str:
    """`lora_te_text_model_encoder_layers_0_self_attn_q_proj`; leaf is one of HF_CLIP_LEAVES."""
    return kohya_name(prefix, f"text_model.encoder.layers.{layer}.{leaf}")


def open_clip_lora_names(prefix: str, layer: int) -> dict:
    """role → kohya name for one OpenCLIP resblock: q, k, v, out (the fused attention), c_fc, c_proj."""
    names = {role: hf_clip_lora_name(prefix, layer, f"self_attn.{role}_proj") for role in OPEN_CLIP_ATTENTION_ROLES}
    names["c_fc"] = hf_clip_lora_name(prefix, layer, "mlp.fc1")
    names["c_proj"] = hf_clip_lora_name(prefix, layer, "mlp.fc2")
    return names
