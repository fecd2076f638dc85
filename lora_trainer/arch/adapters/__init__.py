"""One small adapter per architecture over the model object the webui holds; the training loop only talks to these."""

from __future__ import annotations

from ..detect import detect_arch
from ..parts import model_parts
from .base import NATIVE_RESOLUTION, ModelAdapter, SizeConditioning
from .text import TextConditioning


def get_adapter(model, arch: str | None = None) -> ModelAdapter:
    """The adapter for `model` (SD1 / SD2 / SD2-v / SDXL, detected from its structure unless `arch` is given).
    Raises UnsupportedModel with a user-facing message for anything else."""
    arch = arch or detect_arch(model)
    parts = model_parts(model, arch)
    if hasattr(model, "forge_objects"):
        from .forge import ForgeSDAdapter, ForgeSDXLAdapter

        return (ForgeSDXLAdapter if arch == "sdxl" else ForgeSDAdapter)(model, parts)
    if arch == "sdxl":
        from .sdxl import SDXLAdapter

        return SDXLAdapter(model, parts)
    from .sd import SDAdapter

    return SDAdapter(model, parts)


__all__ = ["NATIVE_RESOLUTION", "ModelAdapter", "SizeConditioning", "TextConditioning", "get_adapter"]
