"""Caption dropout's unconditional input per architecture.

SDXL was trained with sgm's `ucg_rate`, which multiplies every text embedder's output by 0 for a dropped sample:
the cross-attention context *and* the pooled vector become zeros (the size embeddings stay). The webui feeds the
same to SDXL for an empty negative prompt (`force_zero_embeddings=['txt']`), so SDXL's unconditional branch at
inference is zeros, and caption dropout must train that. SD1/SD2 were trained on the empty string's embedding,
which the webui's empty negative prompt also uses, so there a dropped caption stays "" and is encoded.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from ..arch.adapters import TextConditioning

ZERO_UNCOND_ARCHS = ("sdxl",)


def zero_dropped_captions(arch: str, text: TextConditioning, dropped: Optional[Sequence[bool]]) -> TextConditioning:
    """`text` with the rows whose caption was dropped set to zeros (SDXL), else `text` unchanged."""
    if arch not in ZERO_UNCOND_ARCHS or not dropped or not any(dropped):
        return text
    keep = torch.tensor([not d for d in dropped], device=text.context.device)
    context = text.context * keep.view(-1, 1, 1).to(text.context.dtype)  # a product keeps the graph for a trained TE
    pooled = None if text.pooled is None else text.pooled * keep.view(-1, 1).to(text.pooled.dtype)
    return dataclasses.replace(text, context=context, pooled=pooled)  # keeps any other field of the conditioning
