"""Warn about captions the text encoder will cut: SD's CLIP encoders see 75 tokens (77 with BOS/EOS); kohya's default
and the webui's first chunk do the same, but users who caption with BLIP + DeepBooru tags easily go past it and
would otherwise never know that their last tags are ignored."""

from __future__ import annotations

from typing import List, Optional

CAPTION_TOKENS = 75


def count_tokens(adapter, caption: str) -> Optional[int]:
    """Tokens of `caption` without BOS/EOS, with the model's own tokenizer (HF CLIP or OpenCLIP: the same BPE)."""
    for part in adapter.text_encoders:
        tokenizer = getattr(part.embedder, "tokenizer", None)
        if tokenizer is not None:
            return len(tokenizer(caption, add_special_tokens=False)["input_ids"])
    try:
        from open_clip.tokenizer import _tokenizer
    except ImportError:
        return None
    return len(_tokenizer.encode(caption))


def long_caption_warning(adapter, items, trigger_word: str = "") -> Optional[str]:
    long: List[str] = []
    for item in items:
        with_trigger = trigger_word and not getattr(item, "is_reg", False)  # reg images never get the trigger
        text = f"{trigger_word}, {item.caption}" if with_trigger else item.caption
        n = count_tokens(adapter, text)
        if n is not None and n > CAPTION_TOKENS:
            long.append(f"{item.path.name} ({n})")
    if not long:
        return None
    shown = ", ".join(long[:5]) + (f" and {len(long) - 5} more" if len(long) > 5 else "")
    return (f"{len(long)} caption(s) are longer than {CAPTION_TOKENS} tokens; the text encoder only sees the first "
            f"{CAPTION_TOKENS}, so put the important tags first or shorten them: {shown}")
