"""Cutting a caption into 75-token chunks the way the webui cuts a prompt (A1111 1.10
`modules/sd_hijack_clip.py`, `TextConditionalModel.tokenize_line` / `forward`; written from its behaviour):

- the text is split into emphasis pieces (when emphasis is on), each piece tokenised on its own, without BOS/EOS;
- a chunk holds 75 tokens; when it is full and the next token is not a comma, the tokens after the chunk's last comma
  move to the next chunk if that comma is at most `comma_padding_backtrack` (the webui's setting, default 20) tokens
  back;
- `BREAK` ends the chunk;
- a textual-inversion embedding found by `embeddings.find_embedding_at_position` takes `embedding.vectors` placeholder
  tokens (id 0) and a fix (offset, embedding); it never straddles two chunks. As in the webui, a fix is not moved when
  comma back-tracking moves its placeholders to the next chunk;
- each chunk is padded with EOS to 75, then BOS + 75 + EOS = 77 tokens, weights 1.0 at BOS/EOS/padding;
- an empty text is one chunk of padding; in a batch, shorter prompts are padded with empty chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from .emphasis import BREAK_WEIGHT, parse_emphasis

CHUNK_LENGTH = 75  # tokens of text per chunk; + BOS + EOS = 77, the CLIP context
COMMA_PADDING_BACKTRACK = 20  # the webui's default "Prompt word wrap length limit"
PLACEHOLDER_ID = 0  # token id under an embedding's vectors (replaced before the transformer sees it)


class ChunkFix(NamedTuple):
    """Put `embedding`'s vectors at `offset` (0 = the first token after BOS) of a chunk (the webui's PromptChunkFix)."""

    offset: int
    embedding: object


@dataclass
class PromptChunk:
    tokens: List[int] = field(default_factory=list)
    multipliers: List[float] = field(default_factory=list)
    fixes: List[ChunkFix] = field(default_factory=list)


@dataclass(frozen=True)
class TokenizerRules:
    """What chunking needs from one text encoder's tokenizer. `tokenize` maps texts to id lists without BOS/EOS.
    `id_pad` differs from `id_end` for OpenCLIP (pads with 0 after the EOS), as the webui's `process_tokens`."""

    tokenize: Callable[[List[str]], List[List[int]]]
    id_start: int
    id_end: int
    id_pad: int
    comma_token: Optional[int]
    chunk_length: int = CHUNK_LENGTH


def empty_chunk(rules: TokenizerRules) -> PromptChunk:
    n = rules.chunk_length
    return PromptChunk([rules.id_start] + [rules.id_end] * (n + 1), [1.0] * (n + 2))


def tokenize_line(text: str, rules: TokenizerRules, *, emphasis: bool = True, embeddings=None,
                  comma_padding_backtrack: int = COMMA_PADDING_BACKTRACK) -> Tuple[List[PromptChunk], int]:
    """(chunks, token_count) for one text; `token_count` counts the text's tokens as the webui's counter shows
    them (a multiple of 75 for every chunk but the last)."""
    parsed = parse_emphasis(text) if emphasis else [[text, 1.0]]
    tokenized = rules.tokenize([piece for piece, _ in parsed])
    n = rules.chunk_length
    chunks: List[PromptChunk] = []
    state = {"chunk": PromptChunk(), "count": 0, "last_comma": -1}

    def close_chunk(is_last: bool = False) -> None:
        chunk = state["chunk"]
        state["count"] += len(chunk.tokens) if is_last else n
        pad = n - len(chunk.tokens)
        if pad > 0:
            chunk.tokens += [rules.id_end] * pad
            chunk.multipliers += [1.0] * pad
        chunk.tokens = [rules.id_start] + chunk.tokens + [rules.id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        chunks.append(chunk)
        state["chunk"], state["last_comma"] = PromptChunk(), -1

    for tokens, (piece, weight) in zip(tokenized, parsed):
        if piece == "BREAK" and weight == BREAK_WEIGHT:
            close_chunk()
            continue
        position = 0
        while position < len(tokens):
            token, chunk = tokens[position], state["chunk"]
            if token == rules.comma_token:
                state["last_comma"] = len(chunk.tokens)
            elif (comma_padding_backtrack and len(chunk.tokens) == n and state["last_comma"] != -1
                  and len(chunk.tokens) - state["last_comma"] <= comma_padding_backtrack):
                cut = state["last_comma"] + 1
                moved_tokens, moved_weights = chunk.tokens[cut:], chunk.multipliers[cut:]
                del chunk.tokens[cut:], chunk.multipliers[cut:]
                close_chunk()
                state["chunk"].tokens, state["chunk"].multipliers = moved_tokens, moved_weights
            if len(state["chunk"].tokens) == n:
                close_chunk()
            chunk = state["chunk"]
            embedding, length = (None, None) if embeddings is None else \
                embeddings.find_embedding_at_position(tokens, position)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            vectors = int(embedding.vectors)
            if len(chunk.tokens) + vectors > n:
                close_chunk()
                chunk = state["chunk"]
            chunk.fixes.append(ChunkFix(len(chunk.tokens), embedding))
            chunk.tokens += [PLACEHOLDER_ID] * vectors
            chunk.multipliers += [weight] * vectors
            position += length
    if state["chunk"].tokens or not chunks:
        close_chunk(is_last=True)
    return chunks, state["count"]


def pad_to_longest(batch: Sequence[List[PromptChunk]], rules: TokenizerRules) -> List[List[PromptChunk]]:
    """Every prompt gets the batch's largest chunk count; missing chunks are empty ones (as the webui's `forward`)."""
    count = max(len(chunks) for chunks in batch)
    return [list(chunks) + [empty_chunk(rules) for _ in range(count - len(chunks))] for chunks in batch]


def transformer_ids(chunk: PromptChunk, rules: TokenizerRules) -> List[int]:
    """The ids the transformer sees: after the first EOS, `id_pad` (OpenCLIP's 0; the same EOS for HF CLIP)."""
    ids = list(chunk.tokens)
    if rules.id_pad != rules.id_end:
        first_end = ids.index(rules.id_end)
        ids[first_end + 1:] = [rules.id_pad] * (len(ids) - first_end - 1)
    return ids
