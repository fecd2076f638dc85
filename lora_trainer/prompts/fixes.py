"""Putting textual-inversion vectors into the token embeddings, as the webui's `EmbeddingsWithFixes` does: for each row
(one chunk of one prompt) and each fix (offset, embedding), rows offset+1 … offset+n (after BOS) are replaced by the
embedding's n vectors (cut so the final EOS stays). Built with `torch.cat`, so gradients reach the vectors."""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import torch
from torch import nn

from .chunks import ChunkFix


def embedding_vectors(embedding, key: Optional[str]) -> torch.Tensor:
    """`embedding.vec`: a tensor [n, dim], or for SDXL a dict {"clip_l": …, "clip_g": …} read at `key`."""
    vec = embedding.vec
    if isinstance(vec, dict):
        if key not in vec:
            raise KeyError(f"embedding {getattr(embedding, 'name', '?')!r} has no vectors for {key!r} "
                           f"(it has {', '.join(vec)})")
        vec = vec[key]
    return vec


def apply_fixes(embeds: torch.Tensor, row_fixes: Sequence[List[ChunkFix]], key: Optional[str] = None) -> torch.Tensor:
    """embeds [R, T, D] -> the same with each row's fixes applied (unchanged object when there are none)."""
    if not any(row_fixes):
        return embeds
    rows = []
    for fixes, row in zip(row_fixes, embeds):
        for offset, embedding in fixes:
            vec = embedding_vectors(embedding, key).to(device=row.device, dtype=row.dtype)
            n = min(row.shape[0] - offset - 1, vec.shape[0])
            row = torch.cat([row[:offset + 1], vec[:n], row[offset + 1 + n:]])
        rows.append(row)
    return torch.stack(rows)


@contextlib.contextmanager
def fixes_applied(token_embedding: nn.Module, row_fixes: Sequence[List[ChunkFix]],
                  key: Optional[str] = None) -> Iterator[None]:
    """While the block runs, the output of `token_embedding` gets `row_fixes`; the hook is always removed after
    (nothing stays on the host's module), and no hook is added at all when there are no fixes."""
    if not any(row_fixes):
        yield
        return
    handle = token_embedding.register_forward_hook(lambda _module, _args, out: apply_fixes(out, row_fixes, key))
    try:
        yield
    finally:
        handle.remove()
