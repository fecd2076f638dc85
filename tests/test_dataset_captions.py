"""Caption files and per-sample caption processing (reference §3.2, §3.3)."""

from __future__ import annotations

import random

import pytest
from dataset_fixtures import save_image, write_caption

from lora_trainer.dataset.captions import decode_caption, process_caption, read_caption
from lora_trainer.dataset.options import DatasetOptions

CAPTION = "sks, red hair, smiling, outdoors, blue sky, looking at viewer"


# ---- reading ------------------------------------------------------------------------------------------------
def test_txt_preferred_then_caption_fallback(tmp_path):
    img = save_image(tmp_path / "a.png")
    write_caption(img, "from caption", ".caption")
    assert read_caption(img, ".txt") == ("from caption", None)  # .txt missing -> .caption read
    write_caption(img, "from txt", ".txt")
    assert read_caption(img, ".txt") == ("from txt", None)
    assert read_caption(img, ".caption") == ("from caption", None)
    assert read_caption(img, "caption") == ("from caption", None)  # dot added like kohya


def test_configured_caption_extension_falls_back_to_txt(tmp_path):
    img = save_image(tmp_path / "a.png")
    write_caption(img, "only txt", ".txt")
    assert read_caption(img, ".caption") == ("only txt", None)
    assert read_caption(save_image(tmp_path / "b.png"), ".txt") == (None, None)


def test_bom_and_crlf_tolerated():
    assert decode_caption(b"\xef\xbb\xbfa, b\r\n") == ("a, b", None)
    assert decode_caption("caf\u00e9, x\r\n".encode("utf-16")) == ("caf\u00e9, x", None)  # Notepad "Unicode"
    assert decode_caption(b"  a, b  \r") == ("a, b", None)


def test_non_utf8_bytes_are_replaced_with_a_warning():
    text, warning = decode_caption(b"caf\xe9, girl")
    assert text == "caf\ufffd, girl"
    assert "not valid UTF-8" in warning and "0xe9" in warning and "offset 3" in warning


def test_empty_and_multiline_captions():
    assert decode_caption(b"") == (None, "caption file is empty: the folder's class tokens are used instead")
    assert decode_caption(b" \r\n\n")[0] is None
    text, warning = decode_caption(b"\nfirst line\nsecond line\n")
    assert text == "first line" and "only the first is used" in warning


# ---- processing ---------------------------------------------------------------------------------------------
def opts(**kw) -> DatasetOptions:
    return DatasetOptions(**kw)


def test_verbatim_when_all_options_off():
    odd = "a,b ,  c,,d"
    assert process_caption(odd, opts(), random.Random(0), 1) == odd


def test_shuffle_keeps_first_tokens_and_is_deterministic():
    o = opts(shuffle_caption=True, keep_tokens=2)
    tags = [t.strip() for t in CAPTION.split(",")]
    results = {process_caption(CAPTION, o, random.Random(seed), 1) for seed in range(20)}
    assert len(results) > 5  # it does shuffle
    for r in results:
        parts = r.split(", ")
        assert parts[:2] == tags[:2]
        assert sorted(parts) == sorted(tags)
    assert process_caption(CAPTION, o, random.Random(7), 1) == process_caption(CAPTION, o, random.Random(7), 1)


def test_tag_dropout_only_touches_unkept_tags():
    assert process_caption(CAPTION, opts(caption_tag_dropout_rate=1.0, keep_tokens=1), random.Random(0), 1) == "sks"
    o = opts(caption_tag_dropout_rate=0.5)
    kept = [len(process_caption(CAPTION, o, random.Random(s), 1).split(", ")) for s in range(400)]
    assert 2.4 < sum(kept) / len(kept) < 3.6  # 6 tags at 50 %


def test_whole_caption_dropout_rate_and_every_n_epochs():
    assert process_caption(CAPTION, opts(caption_dropout_rate=1.0, trigger_word="sks"), random.Random(0), 1) == ""
    o = opts(caption_dropout_every_n_epochs=3)
    dropped = [e for e in range(1, 10) if process_caption(CAPTION, o, random.Random(0), e) == ""]
    assert dropped == [3, 6, 9]  # epochs count from 1


def test_kohya_order_dropout_draw_comes_before_shuffle():
    """Same rng stream as kohya: one random() for caption dropout, then the shuffle, then tag dropout draws."""
    o = opts(caption_dropout_rate=0.3, shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.2)
    for seed in range(50):
        rng = random.Random(seed)
        if rng.random() < 0.3:
            expected = ""
        else:
            tags = [t.strip() for t in CAPTION.split(",")]
            flexible = tags[1:]
            rng.shuffle(flexible)
            flexible = [t for t in flexible if rng.random() >= 0.2]
            expected = ", ".join(tags[:1] + flexible)
        assert process_caption(CAPTION, o, random.Random(seed), 1) == expected


@pytest.mark.parametrize("caption, kw, expected", [
    ("red hair, smiling", {}, "sks, red hair, smiling"),
    ("sks, red hair", {}, "sks, red hair"),  # already first: not doubled
    ("", {}, "sks"),
    ("red hair, sks", {"caption_tag_dropout_rate": 1.0}, "sks"),
    ("sks, red hair, smiling", {"keep_tokens": 2, "caption_tag_dropout_rate": 1.0}, "sks, red hair"),
])
def test_trigger_word(caption, kw, expected):
    assert process_caption(caption, opts(trigger_word="sks", **kw), random.Random(0), 1) == expected


def test_trigger_word_appears_once_and_first_when_shuffled():
    o = opts(trigger_word="sks", shuffle_caption=True)
    for seed in range(20):
        parts = process_caption("a, sks, b, c", o, random.Random(seed), 1).split(", ")
        assert parts[0] == "sks" and parts.count("sks") == 1 and sorted(parts[1:]) == ["a", "b", "c"]
