"""Per-architecture knowledge: which model we were handed, and where its parts live."""

from .detect import ARCHS, UnsupportedModel, detect_arch
from .parts import ModelParts, TextEncoderPart, model_parts

__all__ = ["ARCHS", "ModelParts", "TextEncoderPart", "UnsupportedModel", "detect_arch", "get_adapter", "model_parts"]


def get_adapter(model, arch=None):
    """The training adapter for `model` (lora_trainer.arch.adapters.get_adapter; imported on first use)."""
    from .adapters import get_adapter as _get_adapter

    return _get_adapter(model, arch)
