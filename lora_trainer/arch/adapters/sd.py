"""SD1 (CLIP ViT-L, eps), SD2 (OpenCLIP ViT-H penultimate, eps) and SD2-v (same, v-prediction): ldm LatentDiffusion."""

from __future__ import annotations

import logging
from typing import List, Optional

import torch

from ...prompts import PromptOptions
from .base import ModelAdapter, SizeConditioning
from .text import TextConditioning, chunk_captions, encode_hf_clip, encode_open_clip, tokenizer_rules

logger = logging.getLogger(__name__)


class SDAdapter(ModelAdapter):
    def __init__(self, model, parts):
        super().__init__(model, parts)
        self.arch = parts.arch
        self._warned_clip_skip = False

    def encode_text(self, captions: List[str], clip_skip: int = 1, prompts: Optional[PromptOptions] = None,
                    embeddings=None) -> TextConditioning:
        part = self.text_encoders[0]
        wrapper = self.model.cond_stage_model  # the webui's hijack wrapper, or the embedder itself
        self.wake(wrapper, getattr(wrapper, "transformer", None), getattr(wrapper, "model", None),
                  getattr(part.embedder, "transformer", None), getattr(part.embedder, "model", None))
        options = prompts or PromptOptions()
        batch = chunk_captions(captions, tokenizer_rules(part), options, embeddings)
        counts = [len(chunks) for chunks in batch]
        if part.kind == "hf_clip":
            return TextConditioning(encode_hf_clip(part.embedder, captions, clip_skip=max(1, clip_skip),
                                                   options=options, batch=batch), None, counts)
        if clip_skip > 1 and not self._warned_clip_skip:
            # The webui ignores clip skip for SD2 too; kohya warns "v2 with clip_skip will be unexpected".
            logger.warning("clip_skip=%d is ignored for SD2 (it already uses the penultimate layer)", clip_skip)
            self._warned_clip_skip = True
        layer = getattr(part.embedder, "layer", "penultimate")
        skip = 1 if layer == "penultimate" else 0
        return TextConditioning(encode_open_clip(part.embedder, captions, skip_last_blocks=skip, final_norm=True,
                                                 options=options, batch=batch), None, counts)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: TextConditioning,
                sizes: Optional[SizeConditioning] = None) -> torch.Tensor:
        wrapper = self.diffusion_wrapper()
        if wrapper is not None:  # ldm DiffusionWrapper, conditioning_key "crossattn": unet(x, t, context=cat(list))
            return wrapper(noisy, timesteps, c_crossattn=[text.context])
        return self.unet(noisy, timesteps=timesteps, context=text.context)
