"""The one error type for "this is not a LoRA file we can use", so callers can show its message as is."""

from __future__ import annotations


class LoRAFormatError(ValueError):
    """Not a usable kohya LoRA file or state dict; the message names the first offending key and the likely cause."""
