"""Captions turned into text-encoder input exactly as the webui turns a prompt into it (pure; no webui import).

    parse_emphasis(text)             -> [[piece, weight], ...]     (emphasis.py; the webui's grammar)
    tokenize_line(text, rules, ...)  -> ([PromptChunk], count)     (chunks.py; 75-token chunks + BOS/EOS)
    pad_to_longest(batch, rules)     -> every prompt with the batch's chunk count (empty chunks added)
    apply_original_emphasis(z, mult) -> the webui's default "Original" emphasis, per chunk
    fixes_applied(module, fixes)     -> textual-inversion vectors put into the token embeddings for one call

The encoders using these live in `lora_trainer/arch/adapters/text.py`; adapters' `encode_text(captions, clip_skip,
prompts=PromptOptions(...), embeddings=None)` is the entry point.

Embeddings protocol (textual inversion / pivotal tuning), the same duck type as the webui's `EmbeddingDatabase`:

    embeddings.find_embedding_at_position(tokens: list[int], offset: int) -> (embedding, n_tokens) | (None, None)

`tokens` is the token ids of one emphasis piece of the caption (no BOS/EOS) and `offset` a position in it; when the
ids of an embedding's trigger text start at `offset`, return it and the number of ids that trigger text takes
(the chunker then skips that many). The embedding object needs:

    embedding.vectors : int — how many vectors it has (that many placeholder tokens are reserved in the chunk)
    embedding.vec     : torch.Tensor [vectors, dim], or for SDXL a dict {"clip_l": [vectors, 768],
                        "clip_g": [vectors, 1280]} (TE1 reads "clip_l", TE2 "clip_g"; SD1/SD2 use the tensor)
    embedding.name    : str (optional; used in error messages)

Lookups run per emphasis piece (with weighted captions "(sks:1.2)" is the piece "sks"; off, the whole caption is one
piece). An embedding never straddles two chunks (a chunk is closed early when it would not fit). As in the webui, when
comma back-tracking moves the tail of a full chunk to the next one, fixes in that tail stay with the first chunk (the
webui then writes the vectors over that chunk's padding): parity over tidiness. The chunker records a
`ChunkFix(offset, embedding)` per occurrence in that chunk (offset counted after BOS); the encoder looks the ids up in
the token-embedding table, then replaces rows offset+1 … offset+vectors with `embedding.vec` via a forward hook on the
token-embedding module that exists only during the call (always removed, also on errors), so the host's model is
unchanged after and autograd flows into `vec` when it requires grad. Emphasis weights apply to the vectors' outputs
as to any token. Trigger-text matching, tokenisation of the trigger, and the vectors' dtype are the lookup's business
(vectors are cast to the token embeddings' dtype and device at use). `EmbeddingLookup({"sks": emb}, rules)`
(lookup.py) is one built the webui's way; the webui's own `EmbeddingDatabase` works as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .chunks import (
    CHUNK_LENGTH,
    COMMA_PADDING_BACKTRACK,
    ChunkFix,
    PromptChunk,
    TokenizerRules,
    empty_chunk,
    pad_to_longest,
    tokenize_line,
    transformer_ids,
)
from .emphasis import EmphasisError, apply_original_emphasis, parse_emphasis
from .fixes import apply_fixes, fixes_applied
from .lookup import EmbeddingLookup

MAX_TOKEN_LENGTHS = (75, 150, 225)


@dataclass(frozen=True)
class PromptOptions:
    """How captions are encoded. `max_token_length` (kohya's name): tokens kept, in whole 75-token chunks;
    `weighted` (kohya's `weighted_captions`): parse and apply emphasis; off, brackets are plain text."""

    max_token_length: int = 225
    weighted: bool = False
    comma_padding_backtrack: int = COMMA_PADDING_BACKTRACK

    @property
    def max_chunks(self) -> int:
        return max(1, self.max_token_length // CHUNK_LENGTH)

    @classmethod
    def from_config(cls, config) -> PromptOptions:
        return cls(max_token_length=int(getattr(config, "max_token_length", 225) or 225),
                   weighted=bool(getattr(config, "weighted_captions", False)))


__all__ = [
    "CHUNK_LENGTH", "COMMA_PADDING_BACKTRACK", "MAX_TOKEN_LENGTHS", "ChunkFix", "EmbeddingLookup", "EmphasisError",
    "PromptChunk",
    "PromptOptions", "TokenizerRules", "apply_fixes", "apply_original_emphasis", "empty_chunk", "fixes_applied",
    "pad_to_longest", "parse_emphasis", "tokenize_line", "transformer_ids",
]
