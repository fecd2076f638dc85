"""Text conditioning computed from the primitive parts (tokenizer + transformer), never through the webui's
wrappers (those parse prompt emphasis and use `.device` attributes that lie under medvram).

Tensors are created on the device of the encoder's own parameters, so a moved encoder keeps working.
Layer conventions (kohya-lora-format.md §5.7, webui-integration.md §3.3-3.5):
- HF CLIP (SD1, SDXL TE1): `last` = last_hidden_state (final LayerNorm included); SD1 `clip_skip=k>1` =
  hidden_states[-k] then final LayerNorm (the webui's CLIP_stop_at_last_layers); SDXL TE1 = hidden_states[layer_idx],
  no final LayerNorm.
- OpenCLIP (SD2, SDXL TE2): SD2 = penultimate block output + ln_final; SDXL TE2 = penultimate without ln_final,
  plus pooled = ln_final(last)[EOT] @ text_projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

MAX_LENGTH = 77  # 75 tokens + BOS + EOS: one chunk, as kohya's default max_token_length


@dataclass
class TextConditioning:
    context: torch.Tensor  # [B, 77, D] cross-attention context
    pooled: Optional[torch.Tensor] = None  # [B, P] SDXL only

    def to(self, device, dtype=None) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        return TextConditioning(self.context.to(device, dtype), pooled)

    def index(self, rows: List[int]) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled[rows]
        return TextConditioning(self.context[rows], pooled)

    @staticmethod
    def cat(parts: List[TextConditioning]) -> TextConditioning:
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextConditioning(torch.cat([p.context for p in parts]), pooled)


def _param_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def hf_clip_tokens(tokenizer, texts: List[str], device) -> torch.Tensor:
    # SD pads with the EOS id (the CLIP tokenizer's pad token), like the webui's SD1 / SDXL-TE1 path
    ids = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH, padding="max_length",
                    return_tensors="pt")["input_ids"]
    return ids.to(device)


def encode_hf_clip(embedder, texts: List[str], *, layer: str = "last", layer_idx: int = -1,
                   clip_skip: int = 1) -> torch.Tensor:
    """layer: "last" (SD1; clip_skip applies), "hidden" (hidden_states[layer_idx], raw) or "penultimate"."""
    transformer = embedder.transformer
    ids = hf_clip_tokens(embedder.tokenizer, texts, _param_device(transformer))
    need_hidden = layer != "last" or clip_skip > 1
    out = transformer(input_ids=ids, output_hidden_states=need_hidden)
    if layer == "hidden":
        return out.hidden_states[layer_idx]
    if layer == "penultimate":
        return out.hidden_states[-2]
    if clip_skip > 1:
        return transformer.text_model.final_layer_norm(out.hidden_states[-clip_skip])
    return out.last_hidden_state


def open_clip_tokens(texts: List[str], device) -> torch.Tensor:
    import open_clip  # already imported by whoever built the OpenCLIP encoder

    return open_clip.tokenize(list(texts), context_length=MAX_LENGTH).to(device)  # pads with 0, as the webui


def encode_open_clip(embedder, texts: List[str], *, skip_last_blocks: int, final_norm: bool,
                     pooled: bool = False):
    """Run `model.transformer` block by block. Returns the output after all but `skip_last_blocks` blocks
    (with ln_final when `final_norm`), and with `pooled` also the projected EOT vector of the last block."""
    model = embedder.model
    tokens = open_clip_tokens(texts, _param_device(model))
    x = model.token_embedding(tokens) + model.positional_embedding
    batch_first = getattr(model.transformer, "batch_first", False)  # open_clip >= 2.24 is batch-first
    if not batch_first:
        x = x.permute(1, 0, 2)
    blocks = list(model.transformer.resblocks)
    stop = len(blocks) - skip_last_blocks
    hidden = x if stop == 0 else None
    for i, block in enumerate(blocks):
        if i >= stop and not pooled:
            break
        x = block(x, attn_mask=model.attn_mask)
        if i == stop - 1:
            hidden = x
    if not batch_first:
        hidden, x = hidden.permute(1, 0, 2), x.permute(1, 0, 2)
    if final_norm:
        hidden = model.ln_final(hidden)
    if not pooled:
        return hidden
    last = model.ln_final(x)
    eot = last[torch.arange(last.shape[0], device=last.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    vector = projection(eot) if isinstance(projection, nn.Module) else eot @ projection
    return hidden, vector
