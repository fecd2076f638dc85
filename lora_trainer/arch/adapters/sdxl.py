"""SDXL (sgm DiffusionEngine): two text encoders (CLIP-L hidden layer + OpenCLIP-bigG penultimate, concatenated),
the TE2 pooled vector and the original-size / crop / target-size embeddings, concatenated into the UNet's `y`."""

from __future__ import annotations

import logging
from typing import List, Optional

import torch

from ...prompts import PromptOptions
from ..detect import UnsupportedModel, _unwrap
from .base import ModelAdapter, SizeConditioning
from .text import (
    TextConditioning,
    chunk_captions,
    encode_hf_clip,
    encode_open_clip,
    hf_clip_rules,
    open_clip_rules,
    pad_chunks,
)

logger = logging.getLogger(__name__)

SIZE_KEYS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")


class SDXLAdapter(ModelAdapter):
    arch = "sdxl"
    uses_size_conditioning = True

    def __init__(self, model, parts):
        super().__init__(model, parts)
        embedders = [_unwrap(e) for e in model.conditioner.embedders]
        self.size_embedders = embedders[2:]
        keys = tuple(getattr(e, "input_key", None) for e in self.size_embedders)
        if keys and None not in keys and set(keys) != set(SIZE_KEYS):
            raise UnsupportedModel(f"SDXL conditioner with inputs {keys} (a refiner?) is not supported; "
                                   "load an SDXL base checkpoint")
        # embedders without input_key: assume sgm's base order (original, crop, target)
        self.size_keys = keys if None not in keys else SIZE_KEYS[:len(keys)]

    def encode_text(self, captions: List[str], clip_skip: int = 1, prompts: Optional[PromptOptions] = None,
                    embeddings=None) -> TextConditioning:
        """crossattn = both encoders' chunks side by side per token; pooled from TE2's first chunk. Clip skip does
        not apply (the webui's default: its "Clip skip SDXL" option is off)."""
        te1, te2 = self.text_encoders[0].embedder, self.text_encoders[1].embedder
        self.wake(self.model.conditioner)  # --medvram hooks the whole conditioner
        options = prompts or PromptOptions()
        rules1, rules2 = hf_clip_rules(te1.tokenizer), open_clip_rules()
        batch1 = chunk_captions(captions, rules1, options, embeddings)
        batch2 = chunk_captions(captions, rules2, options, embeddings)
        # the two tokenizers chunk a text alike; should a rare text split differently, pad with empty chunks
        # (the webui would fail to concatenate the two)
        counts = [max(len(a), len(b)) for a, b in zip(batch1, batch2)]
        batch1, batch2 = pad_chunks(batch1, rules1, max(counts)), pad_chunks(batch2, rules2, max(counts))
        hidden1 = encode_hf_clip(te1, captions, layer=getattr(te1, "layer", "hidden"),
                                 layer_idx=getattr(te1, "layer_idx", 11), options=options, key="clip_l",
                                 batch=batch1)
        skip = 1 if getattr(te2, "layer", "penultimate") == "penultimate" else 0
        hidden2, pooled = encode_open_clip(te2, captions, skip_last_blocks=skip, final_norm=False, pooled=True,
                                           options=options, key="clip_g", batch=batch2)
        hidden2 = hidden2.to(hidden1.device, hidden1.dtype)
        return TextConditioning(torch.cat([hidden1, hidden2], dim=-1), pooled.to(hidden1.device), counts)

    def size_vector(self, sizes: SizeConditioning, device) -> torch.Tensor:
        """[B, 3*512] sinusoidal embeddings, in the conditioner's order (sgm ConcatTimestepEmbedderND)."""
        values = {"original_size_as_tuple": sizes.original_size_hw, "crop_coords_top_left": sizes.crop_top_left,
                  "target_size_as_tuple": sizes.target_size_hw}
        parts = [emb(values[key].to(device=device, dtype=torch.float32))
                 for emb, key in zip(self.size_embedders, self.size_keys)]
        return torch.cat(parts, dim=1)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: TextConditioning,
                sizes: Optional[SizeConditioning] = None) -> torch.Tensor:
        if sizes is None:
            raise ValueError("SDXL needs size conditioning (original size, crop, target size) for every sample")
        vector = torch.cat([text.pooled.to(noisy.device), self.size_vector(sizes, noisy.device).to(text.pooled.dtype)],
                           dim=1)
        wrapper = self.diffusion_wrapper()
        if wrapper is not None:  # sgm OpenAIWrapper: crossattn -> context, vector -> y
            return wrapper(noisy, timesteps, {"crossattn": text.context, "vector": vector})
        return self.unet(noisy, timesteps=timesteps, context=text.context, y=vector)

