"""Single-file checkpoints (.safetensors / .ckpt) loaded into the webui's own model classes, for headless training:
architecture and sizes from the state dict, weights in the file's dtype, no download."""

from .errors import CheckpointError
from .load import LoadedCheckpoint, load_checkpoint
from .write import save_checkpoint

__all__ = ["CheckpointError", "LoadedCheckpoint", "load_checkpoint", "save_checkpoint"]
