"""Captions past `max_token_length` (in the webui's 75-token chunks) are reported with their file names; captions
that fit in the chunks are not (the old 75-token limit no longer applies)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_model

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.prompts import EmphasisError, PromptOptions
from lora_trainer.train.caption_length import caption_chunks, count_tokens, long_caption_warning


def _tags(n):
    return ", ".join(f"tag{i}" for i in range(n))  # 3 tokens per tag: "tag", digits, ","


@pytest.mark.parametrize("arch", ["sd1", "sd2v", "sdxl"])
def test_captions_longer_than_max_token_length_are_named(arch):
    adapter = get_adapter(tiny_model(arch))
    assert count_tokens(adapter, "a photo of a cat") == 5
    short = SimpleNamespace(path=Path("a.png"), caption="red hair, smiling")
    medium = SimpleNamespace(path=Path("b.png"), caption=_tags(40))  # > 75 tokens, < 225
    long = SimpleNamespace(path=Path("c.png"), caption=_tags(100))  # > 225 tokens
    assert caption_chunks(adapter, medium.caption, PromptOptions()) == 2
    assert long_caption_warning(adapter, [short, medium]) is None  # two chunks fit in the default 225
    warning = long_caption_warning(adapter, [short, medium, long], trigger_word="mychar")
    assert warning is not None and "c.png" in warning and "b.png" not in warning and "225" in warning
    one_chunk = long_caption_warning(adapter, [short, medium], options=PromptOptions(max_token_length=75))
    assert one_chunk is not None and "b.png" in one_chunk and "a.png" not in one_chunk


def test_a_caption_the_emphasis_grammar_rejects_is_named_only_with_weighted_captions():
    adapter = get_adapter(tiny_model("sd1"))
    bad = SimpleNamespace(path=Path("x/bad.png"), caption="red (hair:1.2.3)")
    assert long_caption_warning(adapter, [bad]) is None
    with pytest.raises(EmphasisError, match="bad.png"):
        long_caption_warning(adapter, [bad], options=PromptOptions(weighted=True))
