"""Per-architecture knowledge: which model we were handed, and where its parts live."""

from .detect import ARCHS, UnsupportedModel, detect_arch
from .parts import ModelParts, TextEncoderPart, model_parts

__all__ = ["ARCHS", "ModelParts", "TextEncoderPart", "UnsupportedModel", "detect_arch", "model_parts"]
