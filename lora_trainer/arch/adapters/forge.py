"""SD1 / SD2 / SD2-v / SDXL on Forge's engine objects (layout: arch/forge.py).

The engine's own `get_learned_conditioning` / `encode_first_stage` run under `torch.inference_mode()` (their
tensors cannot take part in autograd), so like the ldm adapters this one calls the modules themselves, doing what
Forge's code around them does:
- text (backend/text_processing/classic_engine.py): the same prompt rules as A1111's (lora_trainer/prompts: 75-token
  chunks, comma back-tracking, "Original" emphasis, textual-inversion fixes), with the classic engine's padding
  (after the first EOS: the tokenizer's pad id, so EOS for CLIP-L and 0 for bigG's "!"); per chunk
  hidden_states[-max(clip_skip, minimal_clip_skip)], then `final_layer_norm` for SD1/SD2; SDXL both towers'
  penultimate layer raw, and the bigG `pooler_output @ text_projection` of the first chunk.
- SDXL's `vector`: pooled + Forge's `Timestep(256)` of h, w, crop top, crop left, target h, target w (sdxl.py).
- latents: `first_stage_model.encode` (a posterior sample) then `process_in` ((z - shift) * scale).
- denoiser: `diffusion_model(x, t, context=, y=, transformer_options={})` in the UNet's computation dtype, as
  KModel.apply_model calls it (timesteps are DDPM steps here, so the predictor's sigma mapping is not needed).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

import torch

from ...prompts import PromptOptions, fixes_applied
from ..forge import ForgeModules
from .base import ModelAdapter, SizeConditioning
from .forge_autograd import InplaceSafeNorms
from .text import ChunkRows, TextConditioning, chunk_captions, hf_clip_rules, pad_chunks

MINIMAL_CLIP_SKIP = {"sd1": 1, "sd2": 1, "sd2v": 1, "sdxl": 2}  # the engines' ClassicTextProcessingEngine args


def _param_device(module) -> torch.device:
    return next(module.parameters()).device


def forge_timestep_embedding(values: torch.Tensor, dim: int = 256, max_period: int = 10000) -> torch.Tensor:
    """backend/nn/unet.py `Timestep(dim)` (= `timestep_embedding(t, dim)`: cos then sin), for a [B] tensor."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ForgeAdapter(ModelAdapter):
    def __init__(self, model, parts):
        super().__init__(model, parts)
        self.arch = parts.arch
        self.objects = model.forge_objects
        self._root = ForgeModules(self.unet, [p.root for p in self.text_encoders], self.vae)
        self._inplace_safe = InplaceSafeNorms(self.unet)

    def begin_training(self) -> None:
        self._inplace_safe.enable()

    def end_training(self) -> None:
        self._inplace_safe.remove()

    # ---- facts ------------------------------------------------------------------------------------------------
    @property
    def root_module(self):
        return self._root

    @property
    def predictor(self):
        return self.objects.unet.model.predictor

    @property
    def prediction_type(self) -> str:
        return "v" if getattr(self.predictor, "prediction_type", "epsilon") == "v_prediction" else "epsilon"

    @property
    def scale_factor(self) -> float:
        return float(getattr(self.vae, "scaling_factor", 0.18215))

    @property
    def computation_dtype(self) -> torch.dtype:
        return getattr(self.objects.unet.model, "computation_dtype", None) or self.unet_dtype

    @property
    def lowvram(self) -> bool:
        return False  # Forge's streaming mode is refused by the Forge host before training starts

    def alphas_cumprod(self, device) -> torch.Tensor:
        return self.predictor.alphas_cumprod.detach().to(device=device, dtype=torch.float32)

    def diffusion_wrapper(self):
        return None

    def wake(self, *modules) -> None:
        return None

    # ---- latents ----------------------------------------------------------------------------------------------
    def _encode(self, images, device, dtype):
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            latents = self.vae.encode(images.to(device=device, dtype=dtype))
        latents = getattr(latents, "sample", lambda: latents)() if not torch.is_tensor(latents) else latents
        process_in = getattr(self.vae, "process_in", None)
        return process_in(latents.float()) if process_in is not None else latents.float() * self.scale_factor

    # ---- text -------------------------------------------------------------------------------------------------
    @staticmethod
    def _rules(part):
        tokenizer = part.embedder.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return dataclasses.replace(hf_clip_rules(tokenizer), id_pad=pad)  # classic_engine: self.id_pad

    def _encode_tower(self, part, batch, rules, options, skip: int, final_norm: bool, pooled: bool = False):
        transformer = part.root
        rows = ChunkRows(batch, rules, _param_device(transformer))
        with fixes_applied(transformer.text_model.embeddings.token_embedding, rows.fixes, part.embedder.key):
            out = transformer(input_ids=rows.ids, output_hidden_states=True)
        hidden = out.hidden_states[-skip]
        if final_norm:
            hidden = transformer.text_model.final_layer_norm(hidden)
        hidden = rows.finish(hidden, options.weighted)
        if not pooled:
            return hidden
        first_chunk = out.pooler_output[:rows.batch_size]  # rows are chunk-major
        return hidden, transformer.text_projection(first_chunk.to(hidden.dtype))

    def encode_text(self, captions: List[str], clip_skip: int = 1, prompts: Optional[PromptOptions] = None,
                    embeddings=None) -> TextConditioning:
        options = prompts or PromptOptions()
        skip = max(int(clip_skip or 1), MINIMAL_CLIP_SKIP[self.arch])
        rules = [self._rules(part) for part in self.text_encoders]
        batches = [chunk_captions(captions, r, options, embeddings) for r in rules]
        counts = [max(len(b[i]) for b in batches) for i in range(len(captions))]
        batches = [pad_chunks(b, r, max(counts)) for b, r in zip(batches, rules)]
        if self.arch != "sdxl":
            context = self._encode_tower(self.text_encoders[0], batches[0], rules[0], options, skip, final_norm=True)
            return TextConditioning(context, None, counts)
        te1, te2 = self.text_encoders
        hidden1 = self._encode_tower(te1, batches[0], rules[0], options, skip, final_norm=False)
        hidden2, pooled = self._encode_tower(te2, batches[1], rules[1], options, skip, final_norm=False, pooled=True)
        hidden2, pooled = hidden2.to(hidden1.device, hidden1.dtype), pooled.to(hidden1.device)
        return TextConditioning(torch.cat([hidden1, hidden2], dim=-1), pooled, counts)

    # ---- denoiser ---------------------------------------------------------------------------------------------
    def size_vector(self, sizes: SizeConditioning, device) -> torch.Tensor:
        columns = [sizes.original_size_hw[:, 0], sizes.original_size_hw[:, 1], sizes.crop_top_left[:, 0],
                   sizes.crop_top_left[:, 1], sizes.target_size_hw[:, 0], sizes.target_size_hw[:, 1]]
        return torch.cat([forge_timestep_embedding(c.to(device=device, dtype=torch.float32)) for c in columns], 1)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: TextConditioning,
                sizes: Optional[SizeConditioning] = None) -> torch.Tensor:
        kwargs = {}
        if self.uses_size_conditioning:
            if sizes is None:
                raise ValueError("SDXL needs size conditioning (original size, crop, target size) for every sample")
            vector = torch.cat([text.pooled.to(noisy.device),
                                self.size_vector(sizes, noisy.device).to(text.pooled.dtype)], dim=1)
            kwargs["y"] = vector
        return self.unet(noisy, timesteps, context=text.context, transformer_options={}, **kwargs)


class ForgeSDAdapter(ForgeAdapter):
    pass


class ForgeSDXLAdapter(ForgeAdapter):
    arch = "sdxl"
    uses_size_conditioning = True
