"""kohya LoRA `.safetensors` files: atomic save with kohya's hashes, validated load, metadata, inspection."""

from .errors import LoRAFormatError
from .load import load_lora
from .metadata import build_metadata
from .save import save_lora

__all__ = ["LoRAFormatError", "build_metadata", "load_lora", "save_lora"]
