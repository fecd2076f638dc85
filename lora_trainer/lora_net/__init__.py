"""kohya-style LoRA network that attaches in place to the webui's loaded SD1 / SD2 / SDXL model."""

from .base import ForwardOverride, LoRAModuleBase
from .conv import ConvLoRA
from .linear import LinearLoRA
from .mha import MultiheadAttentionLoRA
from .network import LoRANetwork

__all__ = ["ConvLoRA", "ForwardOverride", "LinearLoRA", "LoRAModuleBase", "LoRANetwork", "MultiheadAttentionLoRA"]
