"""Captions past the text encoder's 75 tokens are reported with their file names, counted by the model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_model

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.train.caption_length import count_tokens, long_caption_warning


@pytest.mark.parametrize("arch", ["sd1", "sd2v", "sdxl"])
def test_long_captions_are_named_and_short_ones_pass(arch):
    adapter = get_adapter(tiny_model(arch))
    assert count_tokens(adapter, "a photo of a cat") == 5
    short = SimpleNamespace(path=Path("a.png"), caption="red hair, smiling")
    long = SimpleNamespace(path=Path("b.png"), caption=", ".join(f"tag{i}" for i in range(60)))
    assert long_caption_warning(adapter, [short]) is None
    warning = long_caption_warning(adapter, [short, long], trigger_word="mychar")
    assert warning is not None and "b.png" in warning and "a.png" not in warning and "75" in warning
