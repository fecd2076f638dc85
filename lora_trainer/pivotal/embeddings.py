"""The trainable vectors of one new token, one set per text encoder, and the lookup the prompt encoder uses to put
them in place of the token (prompts.lookup.EmbeddingLookup: the webui's EmbeddingDatabase matching).

Nothing is added to a tokenizer or an embedding table: the token keeps its ordinary BPE ids in the tokenizer, and
the prompt encoder substitutes the vectors after the token-embedding lookup, as the webui does at inference.
Keys follow the webui's `textual_inversion_key`: "clip_l" (SD1, SDXL TE1), "clip_g" (SD2, SDXL TE2).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import nn

from ..prompts.lookup import EmbeddingLookup

PIVOTAL_GROUP = "pivotal"


def token_table(part) -> nn.Embedding:
    """The text encoder's token-embedding table (HF CLIP or OpenCLIP); in the webui it is wrapped by the hijack's
    `EmbeddingsWithFixes` (`.wrapped` is the nn.Embedding)."""
    if part.kind == "hf_clip":
        table = part.embedder.transformer.text_model.embeddings.token_embedding
    else:
        table = part.embedder.model.token_embedding
    while not hasattr(table, "weight") and hasattr(table, "wrapped"):
        table = table.wrapped
    return table


def token_ids(adapter, text: str) -> List[int]:
    """BPE ids of `text` without BOS/EOS, as the webui's `cond_stage_model.tokenize([text])[0]` (SDXL: TE1's
    tokenizer; CLIP's and OpenCLIP's BPE vocabularies are the same)."""
    from ..arch.adapters.text import tokenizer_rules

    return list(tokenizer_rules(adapter.text_encoders[0]).tokenize([text])[0])


def _keys(adapter) -> List[str]:
    if adapter.arch == "sdxl":
        return ["clip_l", "clip_g"]
    return ["clip_l" if adapter.text_encoders[0].kind == "hf_clip" else "clip_g"]


class PivotalEmbedding:
    """What the webui's `Embedding` offers the prompt encoder: name, vec ([n, dim] or {key: [n, dim]}), vectors."""

    def __init__(self, name: str, vectors: Dict[str, nn.Parameter]):
        self.name = name
        self.params = vectors
        self.vec = next(iter(vectors.values())) if len(vectors) == 1 else dict(vectors)
        self.vectors = next(iter(vectors.values())).shape[0]
        self.shape = sum(v.shape[-1] for v in vectors.values())


class PivotalEmbeddings:
    """Create with `PivotalEmbeddings.create(adapter, config)`; train through `param_group`; `freeze` at
    `pivotal_frac` of the steps."""

    def __init__(self, token: str, vectors: Dict[str, nn.Parameter], ids: List[int], rules):
        self.token = token
        self.embedding = PivotalEmbedding(token, vectors)
        self.ids = list(ids)
        self.lookup = EmbeddingLookup({token: self.embedding}, rules)  # the webui's EmbeddingDatabase matching
        self.frozen = False

    @classmethod
    def create(cls, adapter, config, device=None) -> PivotalEmbeddings:
        c = config
        n = int(c.pivotal_vectors_per_token)
        init = (c.pivotal_init or "random").strip()
        init_ids = [] if init.lower() == "random" else token_ids(adapter, init)
        if init.lower() != "random" and not init_ids:
            raise ValueError(f"pivotal_init: {init!r} gives no tokens; use a class word such as 'woman' or random")
        generator = torch.Generator().manual_seed(int(c.seed) + 7)
        vectors = {}
        for key, part in zip(_keys(adapter), adapter.text_encoders):
            table = token_table(part).weight.detach()
            target = torch.device(device) if device is not None else table.device
            if init_ids:  # the class word's own rows, cycled to n vectors (the HF recipe's initializer_concept)
                rows = table[[init_ids[i % len(init_ids)] for i in range(n)]].float().cpu()
            else:  # random directions at the table's mean row norm, so the TE sees vectors of a familiar size
                norm = table.float().norm(dim=1).mean().cpu()
                rows = torch.randn(n, table.shape[1], generator=generator)
                rows = rows / rows.norm(dim=1, keepdim=True) * norm
            vectors[key] = nn.Parameter(rows.to(target, torch.float32).clone())
        from ..arch.adapters.text import tokenizer_rules

        return cls(c.pivotal_token, vectors, token_ids(adapter, c.pivotal_token),
                   tokenizer_rules(adapter.text_encoders[0]))

    # ---- training ----------------------------------------------------------------------------------------------
    def parameters(self) -> List[nn.Parameter]:
        return list(self.embedding.params.values())

    def param_group(self, lr: float, weight_decay: Optional[float] = None) -> dict:
        group = {"params": self.parameters(), "lr": float(lr), "name": PIVOTAL_GROUP}
        if weight_decay is not None:
            group["weight_decay"] = float(weight_decay)
        return group

    @staticmethod
    def freeze_step(config, total_steps: int) -> int:
        """Steps that train the vectors: those before this one (at least one)."""
        return max(1, int(math.ceil(float(config.pivotal_frac) * total_steps)))

    def freeze(self, optimizer, scheduler=None) -> None:
        """No gradient, lr 0 and no further weight decay: optimizers skip parameters whose grad is None."""
        for p in self.parameters():
            p.requires_grad_(False)
            p.grad = None
        for i, group in enumerate(optimizer.param_groups):
            if group.get("name") == PIVOTAL_GROUP:
                group["lr"] = 0.0
                if scheduler is not None and hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs[i] = 0.0
        self.frozen = True

    # ---- saving ------------------------------------------------------------------------------------------------
    def tensors(self) -> Dict[str, torch.Tensor]:
        """{key: [n, dim]} fp32 CPU copies."""
        return {k: v.detach().float().cpu().clone() for k, v in self.embedding.params.items()}
