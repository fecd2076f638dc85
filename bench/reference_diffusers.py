"""The reference recipe users know: diffusers `UNet2DConditionModel` + PEFT LoRA, stepped the way diffusers'
`examples/text_to_image/train_text_to_image_lora.py` does (frozen base, LoRA params only, add_noise, MSE on eps,
clip_grad_norm_, optimizer.step, zero_grad; `enable_gradient_checkpointing()` when asked).

Target layers are ours (kohya's set): attention q/k/v/out, proj_in/proj_out and the feed-forward linears inside
every transformer, so both sides train the same number of LoRA parameters.
"""

from __future__ import annotations

import torch

# kohya's LoRA targets inside each Transformer2DModel, in diffusers module names
TARGETS = (r".*(attentions\.\d+\.(proj_in|proj_out)"
           r"|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))$")

SD15_UNET = dict(
    sample_size=64, cross_attention_dim=768, attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
)
SDXL_UNET = dict(
    sample_size=128, cross_attention_dim=2048, block_out_channels=(320, 640, 1280), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def build_reference_unet(arch: str, rank: int, alpha: float, device, dtype, gradient_checkpointing: bool):
    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    unet = UNet2DConditionModel(**(SDXL_UNET if arch == "sdxl" else SD15_UNET))
    unet.requires_grad_(False)
    unet.to(device, dtype=dtype)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TARGETS))
    for p in unet.parameters():  # as the recipe does: LoRA params in fp32 for mixed precision
        if p.requires_grad:
            p.data = p.data.float()
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return unet


def reference_step_fn(unet, latents, context, vector, optimizer, alphas_cumprod, autocast_dtype, device_type):
    """One optimizer step of the diffusers recipe on fixed (cached) latents and text embeddings."""
    params = [p for p in unet.parameters() if p.requires_grad]
    bsz = latents.shape[0]
    added = None
    if vector is not None:  # SDXL: pooled text embeds + 6 size numbers, the recipe's add_time_ids
        added = {"text_embeds": vector[:, :1280], "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * bsz,
                                                                           device=latents.device, dtype=latents.dtype)}

    def step():
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (bsz,), device=latents.device)
        acp = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = acp.sqrt() * latents + (1 - acp).sqrt() * noise
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            pred = unet(noisy, t, context, added_cond_kwargs=added).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step
