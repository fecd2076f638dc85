"""How many bytes the UNet forward keeps for backward (the activation memory), ours vs diffusers + PEFT.

    python bench/saved_for_backward.py            # SDXL structure (depths 0/2/10) at 128 base channels, 256² latents

Counts the storages autograd saves (deduplicated, parameters excluded) during one forward with LoRA attached, with and
without gradient checkpointing. Device-independent, so it checks activation memory without a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


class SavedBytes:
    def __init__(self):
        self.seen, self.total = set(), 0

    def pack(self, t):
        key = t.untyped_storage().data_ptr()
        if key not in self.seen and not isinstance(t, torch.nn.Parameter):
            self.seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t


def ours(ckpt: bool):
    from lora_trainer.lora_net import LoRANetwork
    from lora_trainer.testing.tiny_sdxl import SDXL_TINY, build_tiny_sdxl
    from lora_trainer.train.checkpointing import GradientCheckpointing

    cfg = dict(SDXL_TINY, model_channels=128, channel_mult=[1, 2, 4], num_head_channels=64,
               transformer_depth=[0, 2, 10], te1_width=768, te1_layers=1, te1_heads=12, te2_width=1280, te2_layers=1,
               te2_heads=20)
    model = build_tiny_sdxl(cfg=cfg).requires_grad_(False)
    LoRANetwork.create(model, rank=16, alpha=8, train_text_encoder=False).attach()
    if ckpt:
        GradientCheckpointing(model.model.diffusion_model).enable()
    cond = {"crossattn": torch.randn(1, 77, 2048), "vector": torch.randn(1, 2816)}
    return lambda x: model.apply_model(x, torch.tensor([500]), cond)


def reference(ckpt: bool):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from reference_diffusers import SDXL_UNET, TARGETS

    unet = UNet2DConditionModel(**dict(SDXL_UNET, block_out_channels=(128, 256, 512), attention_head_dim=(2, 4, 8)))
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=16, lora_alpha=8, init_lora_weights="gaussian", target_modules=TARGETS))
    if ckpt:
        unet.enable_gradient_checkpointing()
    unet.train()
    added = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.tensor([[256.0, 256, 0, 0, 256, 256]])}
    return lambda x: unet(x, torch.tensor([500]), torch.randn(1, 77, 2048), added_cond_kwargs=added).sample


def main() -> int:
    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    print("| UNet forward | ours saved for backward | diffusers+PEFT saved for backward |\n|---|---|---|")
    for ckpt in (True, False):
        sizes = []
        for build in (ours, reference):
            saved = SavedBytes()
            run = build(ckpt)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                run(torch.randn(1, 4, 32, 32))
            sizes.append(saved.total / 2**20)
        print(f"| gradient checkpointing {'on' if ckpt else 'off'} | {sizes[0]:.1f} MiB | {sizes[1]:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
