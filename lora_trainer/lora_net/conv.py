"""LoRA for an `nn.Conv2d` target: SD1 proj_in/out (1×1), ResBlock convs, skip connections, down/up-samplers."""

from __future__ import annotations

from torch import nn

from .base import LoRAModuleBase


class ConvLoRA(LoRAModuleBase):
    """down: the target's kernel/stride/padding (in → rank), up: 1×1 (rank → out), as kohya and A1111 build them."""

    def __init__(self, lora_name: str, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 rank: int, alpha: float | None, dropout: float = 0.0, dilation=1, padding_mode: str = "zeros",
                 device=None):
        down = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, dilation=dilation, bias=False,
                         padding_mode=padding_mode, device=device)
        up = nn.Conv2d(rank, out_channels, 1, bias=False, device=device)
        super().__init__(lora_name, down, up, rank, alpha, dropout)
        self.weight_shape = (out_channels, in_channels, *down.kernel_size)

    @classmethod
    def for_target(cls, lora_name: str, target: nn.Conv2d, rank: int, alpha: float | None, dropout: float = 0.0):
        if target.groups != 1:
            raise ValueError(f"{lora_name}: grouped convolutions (groups={target.groups}) cannot take a LoRA")
        return cls(lora_name, target.in_channels, target.out_channels, target.kernel_size, target.stride,
                   target.padding, rank, alpha, dropout, dilation=target.dilation, padding_mode=target.padding_mode,
                   device=target.weight.device)
