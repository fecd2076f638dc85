"""Text conditioning computed from the primitive parts (tokenizer + transformer), never through the webui's
wrappers (those read the webui's global options and use `.device` attributes that lie under medvram), but with the
webui's prompt rules (lora_trainer/prompts): 75-token chunks with BOS/EOS, comma back-tracking, emphasis,
textual-inversion fixes; the chunks' outputs are concatenated on the sequence axis ([B, 77 × chunks, D]).

Tensors are created on the device of the encoder's own parameters, so a moved encoder keeps working.
Layer conventions (kohya-lora-format.md §5.7, webui-integration.md §3.3-3.5):
- HF CLIP (SD1, SDXL TE1): `last` = last_hidden_state (final LayerNorm included); SD1 `clip_skip=k>1` =
  hidden_states[-k] then final LayerNorm (the webui's CLIP_stop_at_last_layers); SDXL TE1 = hidden_states[layer_idx],
  no final LayerNorm.
- OpenCLIP (SD2, SDXL TE2): SD2 = penultimate block output + ln_final; SDXL TE2 = penultimate without ln_final,
  plus pooled = ln_final(last)[EOT] @ text_projection, from the first chunk (as the webui).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

from ...prompts import (
    EmphasisError,
    PromptChunk,
    PromptOptions,
    TokenizerRules,
    apply_fixes,
    apply_original_emphasis,
    empty_chunk,
    fixes_applied,
    pad_to_longest,
    tokenize_line,
    transformer_ids,
)

MAX_LENGTH = 77  # 75 tokens + BOS + EOS: one chunk
logger = logging.getLogger(__name__)


@dataclass
class TextConditioning:
    context: torch.Tensor  # [B, 77 × chunks, D] cross-attention context
    pooled: Optional[torch.Tensor] = None  # [B, P] SDXL only
    chunks: Optional[List[int]] = None  # per row, its caption's own chunk count (the rest is batch padding)

    def to(self, device, dtype=None) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled.to(device, dtype)
        return TextConditioning(self.context.to(device, dtype), pooled, self.chunks)

    def index(self, rows: List[int]) -> TextConditioning:
        pooled = None if self.pooled is None else self.pooled[rows]
        chunks = None if self.chunks is None else [self.chunks[r] for r in rows]
        return TextConditioning(self.context[rows], pooled, chunks)

    def unpadded(self) -> TextConditioning:
        """One row cut to its caption's own chunks (as if it had been encoded alone)."""
        if self.chunks is None or self.context.shape[0] != 1:
            return self
        return TextConditioning(self.context[:, :MAX_LENGTH * self.chunks[0]], self.pooled, self.chunks)

    @staticmethod
    def cat(parts: List[TextConditioning], empty: Optional[TextConditioning] = None) -> TextConditioning:
        """Rows of several encodings in one batch. Shorter contexts are padded with `empty` (the encoding of "",
        one chunk) repeated, as the webui pads a shorter prompt with empty chunks."""
        longest = max(p.context.shape[1] for p in parts)
        contexts = []
        for p in parts:
            missing = longest - p.context.shape[1]
            if missing and empty is None:
                raise ValueError("text encodings of different lengths need the empty-caption encoding to pad with")
            if missing:
                pad = empty.context[:, :MAX_LENGTH].to(p.context.device, p.context.dtype)
                pad = pad.expand(p.context.shape[0], -1, -1)
                contexts.append(torch.cat([p.context] + [pad] * (missing // MAX_LENGTH), dim=1))
            else:
                contexts.append(p.context)
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        chunks = None if any(p.chunks is None for p in parts) else [n for p in parts for n in p.chunks]
        return TextConditioning(torch.cat(contexts), pooled, chunks)


def _param_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# ---- chunking -------------------------------------------------------------------------------------------------
def hf_clip_rules(tokenizer) -> TokenizerRules:
    def tokenize(texts):
        return tokenizer(list(texts), truncation=False, add_special_tokens=False)["input_ids"]

    return TokenizerRules(tokenize=tokenize, id_start=tokenizer.bos_token_id, id_end=tokenizer.eos_token_id,
                          id_pad=tokenizer.eos_token_id, comma_token=tokenizer.get_vocab().get(",</w>"))


def open_clip_rules() -> TokenizerRules:
    from open_clip.tokenizer import _tokenizer  # the module-level tokenizer the webui uses too

    def tokenize(texts):
        return [_tokenizer.encode(text) for text in texts]

    return TokenizerRules(tokenize=tokenize, id_start=_tokenizer.encoder["<start_of_text>"],
                          id_end=_tokenizer.encoder["<end_of_text>"], id_pad=0,
                          comma_token=_tokenizer.encoder.get(",</w>"))


def chunk_captions(captions: Sequence[str], rules: TokenizerRules, options: PromptOptions,
                   embeddings=None) -> List[List[PromptChunk]]:
    """Per caption its chunks, at most `options.max_chunks` (not padded)."""
    batch = []
    for caption in captions:
        try:
            chunks, _ = tokenize_line(caption, rules, emphasis=options.weighted, embeddings=embeddings,
                                      comma_padding_backtrack=options.comma_padding_backtrack)
        except EmphasisError as exc:
            # captions are checked before training; tag shuffling can still join "(a" and "b:1.2.3)". The webui
            # would refuse such a prompt, so there is nothing to match: read it as text rather than stop the run.
            logger.warning("%s; this caption is read without emphasis", exc)
            chunks, _ = tokenize_line(caption, rules, emphasis=False, embeddings=embeddings,
                                      comma_padding_backtrack=options.comma_padding_backtrack)
        batch.append(chunks[:options.max_chunks])
    return batch


def pad_chunks(batch: List[List[PromptChunk]], rules: TokenizerRules, count: int = 0) -> List[List[PromptChunk]]:
    """Every caption padded with empty chunks to the batch's longest (or `count`), as the webui's `forward`."""
    padded = pad_to_longest(batch, rules)
    return [chunks + [empty_chunk(rules) for _ in range(count - len(chunks))] for chunks in padded]


class ChunkRows:
    """A padded batch as transformer rows, chunk-major (row = chunk i of caption b at i × B + b)."""

    def __init__(self, batch: List[List[PromptChunk]], rules: TokenizerRules, device):  # batch: padded
        self.batch_size, self.chunks = len(batch), len(batch[0])
        rows = [batch[b][i] for i in range(self.chunks) for b in range(self.batch_size)]
        self.ids = torch.tensor([transformer_ids(c, rules) for c in rows], dtype=torch.long, device=device)
        self.multipliers = torch.tensor([c.multipliers for c in rows], dtype=torch.float32)
        self.fixes = [c.fixes for c in rows]

    def finish(self, z: torch.Tensor, weighted: bool) -> torch.Tensor:
        """Emphasis per chunk, then [R, 77, D] -> [B, 77 × chunks, D] (chunks side by side, like torch.hstack)."""
        if weighted:
            z = apply_original_emphasis(z, self.multipliers)
        b, k = self.batch_size, self.chunks
        return z.reshape(k, b, z.shape[1], z.shape[2]).transpose(0, 1).reshape(b, k * z.shape[1], z.shape[2])


# ---- encoders -------------------------------------------------------------------------------------------------
def encode_hf_clip(embedder, texts: List[str], *, layer: str = "last", layer_idx: int = -1, clip_skip: int = 1,
                   options: Optional[PromptOptions] = None, embeddings=None, key: str = "clip_l",
                   batch: Optional[List[List[PromptChunk]]] = None) -> torch.Tensor:
    """layer: "last" (SD1; clip_skip applies), "hidden" (hidden_states[layer_idx], raw) or "penultimate".
    `batch`: the captions already chunked with `hf_clip_rules` (then `texts` is not read); padded here."""
    options = options or PromptOptions()
    transformer = embedder.transformer
    rules = hf_clip_rules(embedder.tokenizer)
    if batch is None:
        batch = chunk_captions(texts, rules, options, embeddings)
    rows = ChunkRows(pad_chunks(batch, rules), rules, _param_device(transformer))
    need_hidden = layer != "last" or clip_skip > 1
    with fixes_applied(transformer.text_model.embeddings.token_embedding, rows.fixes, key):
        out = transformer(input_ids=rows.ids, output_hidden_states=need_hidden)
    if layer == "hidden":
        z = out.hidden_states[layer_idx]
    elif layer == "penultimate":
        z = out.hidden_states[-2]
    elif clip_skip > 1:
        z = transformer.text_model.final_layer_norm(out.hidden_states[-clip_skip])
    else:
        z = out.last_hidden_state
    return rows.finish(z, options.weighted)


def encode_open_clip(embedder, texts: List[str], *, skip_last_blocks: int, final_norm: bool, pooled: bool = False,
                     options: Optional[PromptOptions] = None, embeddings=None, key: str = "clip_g",
                     batch: Optional[List[List[PromptChunk]]] = None):
    """Run `model.transformer` block by block. Returns the output after all but `skip_last_blocks` blocks
    (with ln_final when `final_norm`), and with `pooled` also the projected EOT vector of the first chunk's last
    block. `batch`: the captions already chunked with `open_clip_rules`."""
    options = options or PromptOptions()
    model = embedder.model
    rules = open_clip_rules()
    if batch is None:
        batch = chunk_captions(texts, rules, options, embeddings)
    rows = ChunkRows(pad_chunks(batch, rules), rules, _param_device(model))
    tokens = rows.ids
    x = apply_fixes(model.token_embedding(tokens), rows.fixes, key) + model.positional_embedding
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
    hidden = rows.finish(hidden, options.weighted)
    if not pooled:
        return hidden
    first = rows.batch_size  # rows of the first chunk come first
    last = model.ln_final(x[:first])
    eot = last[torch.arange(first, device=last.device), tokens[:first].argmax(dim=-1)]
    projection = model.text_projection
    vector = projection(eot) if isinstance(projection, nn.Module) else eot @ projection
    return hidden, vector


def tokenizer_rules(part) -> TokenizerRules:
    """The chunking rules of one text encoder part (lora_trainer.arch.parts.TextEncoderPart)."""
    return hf_clip_rules(part.embedder.tokenizer) if part.kind == "hf_clip" else open_clip_rules()
