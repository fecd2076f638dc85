"""Turning a list of dataset items into what one forward pass needs: latents, captions, loss weights, SDXL sizes.
Also the text-encoder output cache used when the text encoder is not trained."""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..arch.adapters import SizeConditioning, TextConditioning


@dataclass
class Batch:
    latents: torch.Tensor  # [B, 4, h, w] fp32 on the training device
    captions: List[str]
    loss_weights: torch.Tensor  # [B] prior_loss_weight for reg images, else 1
    sizes: Optional[SizeConditioning]  # SDXL only
    dropped: Optional[List[bool]] = None  # per sample: caption dropout removed its caption (see uncond.py)


def make_batch(items, *, adapter, options, epoch: int, rng: random.Random, device, latent_cache=None) -> Batch:
    """`epoch` is 1-based (caption_dropout_every_n_epochs counts from 1). All randomness comes from `rng`
    (flip, caption shuffle/dropout, random crop), and the VAE sample from the global RNG, both seeded per step."""
    from ..dataset import load_image
    from ..dataset.captions import sample_caption
    from ..dataset.images import center_crop_top_left

    flips = [bool(options.flip_aug) and rng.random() < 0.5 for _ in items]
    crops = []
    if latent_cache is not None:
        latents = torch.stack([latent_cache.get(item, flip) for item, flip in zip(items, flips)])
        crops = [center_crop_top_left(item, flip) for item, flip in zip(items, flips)]
    else:
        images = []
        for item, flip in zip(items, flips):
            image, crop = load_image(item, flip, rng)
            images.append(image)
            crops.append(crop)
        latents = adapter.encode_images(torch.stack(images), device)
    # regularisation images never get the trigger word (they keep the class prior)
    sampled = [sample_caption(item.caption, options, rng, epoch, is_reg=item.is_reg) for item in items]
    captions = [caption for caption, _ in sampled]
    weights = torch.tensor([float(item.loss_weight) for item in items], dtype=torch.float32, device=device)
    sizes = None
    if adapter.uses_size_conditioning:
        sizes = SizeConditioning(
            original_size_hw=torch.tensor([item.original_size_hw for item in items], dtype=torch.float32),
            crop_top_left=torch.tensor(crops, dtype=torch.float32),
            target_size_hw=torch.tensor([(item.bucket[1], item.bucket[0]) for item in items], dtype=torch.float32))
    return Batch(latents.to(device=device, dtype=torch.float32), captions, weights, sizes,
                 [dropped for _, dropped in sampled])


class TextEncoderCache:
    """Text-encoder outputs per caption, for a frozen text encoder: each distinct caption is encoded once.
    Bounded (LRU) so shuffled captions cannot grow it without limit; kept on the training device.
    Entries keep their own chunk count; a batch is padded to its longest with the empty caption's encoding, so it
    equals encoding the batch directly."""

    def __init__(self, adapter, clip_skip: int, max_entries: int = 2048, prompts=None):
        self.adapter = adapter
        self.clip_skip = clip_skip
        self.prompts = prompts
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._empty: Optional[TextConditioning] = None

    def _encode(self, captions: List[str]) -> TextConditioning:
        with torch.no_grad():
            return self.adapter.encode_text(captions, self.clip_skip, prompts=self.prompts)

    def __len__(self) -> int:
        return len(self._entries)

    def encode(self, captions: List[str]) -> TextConditioning:
        missing = list(dict.fromkeys(c for c in captions if c not in self._entries))
        if missing:
            out = self._encode(missing)
            for i, caption in enumerate(missing):
                self._entries[caption] = out.index([i]).unpadded()
                if len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        parts = []
        for caption in captions:
            entry = self._entries.get(caption)
            if entry is None:  # evicted while filling a huge batch: encode it on its own
                entry = self._encode([caption])
            else:
                self._entries.move_to_end(caption)
            parts.append(entry)
        if len({p.context.shape[1] for p in parts}) > 1 and self._empty is None:
            self._empty = self._encode([""])
        return TextConditioning.cat(parts, self._empty)

    def clear(self) -> None:
        self._entries.clear()
