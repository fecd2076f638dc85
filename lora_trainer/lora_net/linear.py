"""LoRA for an `nn.Linear` target (attention projections, feed-forward, SD2/SDXL proj_in/out, emb_layers.1)."""

from __future__ import annotations

from torch import nn

from .base import LoRAModuleBase


class LinearLoRA(LoRAModuleBase):
    """down: Linear(in → rank), up: Linear(rank → out); weights [rank, in] and [out, rank] as in kohya files."""

    def __init__(self, lora_name: str, in_features: int, out_features: int, rank: int, alpha: float | None,
                 dropout: float = 0.0, device=None):
        down = nn.Linear(in_features, rank, bias=False, device=device)
        up = nn.Linear(rank, out_features, bias=False, device=device)
        super().__init__(lora_name, down, up, rank, alpha, dropout)
        self.weight_shape = (out_features, in_features)

    @classmethod
    def for_target(cls, lora_name: str, target: nn.Linear, rank: int, alpha: float | None, dropout: float = 0.0):
        return cls(lora_name, target.in_features, target.out_features, rank, alpha, dropout,
                   device=target.weight.device)
