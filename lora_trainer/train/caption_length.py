"""Warn about captions the trainer will cut. Captions are encoded as the webui encodes prompts, in 75-token chunks
(lora_trainer/prompts), up to `max_token_length` tokens (75 / 150 / 225); the webui keeps every chunk of a prompt,
so text past the limit is seen at inference but never trained on. Users who caption with BLIP + DeepBooru tags
easily go past 75, rarely past 225; the warning names the files."""

from __future__ import annotations

from typing import List, Optional

from ..prompts import EmphasisError, PromptOptions, tokenize_line


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


def caption_chunks(adapter, caption: str, options: PromptOptions) -> int:
    """How many 75-token chunks the webui's rules give `caption` (comma back-tracking, BREAK, emphasis syntax)."""
    from ..arch.adapters.text import tokenizer_rules

    chunks, _ = tokenize_line(caption, tokenizer_rules(adapter.text_encoders[0]), emphasis=options.weighted,
                              comma_padding_backtrack=options.comma_padding_backtrack)
    return len(chunks)


def long_caption_warning(adapter, items, trigger_word: str = "",
                         options: Optional[PromptOptions] = None) -> Optional[str]:
    """A message naming the captions longer than `options.max_token_length`, or None. Raises EmphasisError
    naming the file for a caption the webui's emphasis grammar rejects (only with weighted captions)."""
    options = options or PromptOptions()
    long: List[str] = []
    for item in items:
        with_trigger = trigger_word and not getattr(item, "is_reg", False)  # reg images never get the trigger
        text = f"{trigger_word}, {item.caption}" if with_trigger else item.caption
        try:
            n = caption_chunks(adapter, text, options)
        except EmphasisError as exc:
            raise EmphasisError(f"{item.path}: {exc}; escape the brackets as \\( \\) or fix the weight") from None
        if n > options.max_chunks:
            tokens = count_tokens(adapter, text)
            long.append(f"{item.path.name} ({tokens} tokens)" if tokens is not None else item.path.name)
    if not long:
        return None
    limit = options.max_token_length
    shown = ", ".join(long[:5]) + (f" and {len(long) - 5} more" if len(long) > 5 else "")
    return (f"{len(long)} caption(s) are longer than max_token_length ({limit} tokens in 75-token chunks); training "
            f"only sees the first {limit}, so put the important tags first, shorten them"
            f"{' or raise max_token_length' if limit < 225 else ''}: {shown}")
