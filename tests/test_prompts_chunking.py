"""The webui's prompt rules, on the real CLIP tokenizer: emphasis grammar (hand-worked cases), 75-token chunks with
BOS/EOS, comma back-tracking, BREAK, batch padding with empty chunks, and textual-inversion fixes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lora_trainer.prompts import (
    ChunkFix,
    EmphasisError,
    apply_original_emphasis,
    empty_chunk,
    pad_to_longest,
    parse_emphasis,
    tokenize_line,
    transformer_ids,
)

BOS, EOS = 49406, 49407


@pytest.mark.parametrize("text, expected", [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    (r"\(literal\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.1 * 1.1 * 1.3], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.1 ** 4], [".", 1.1]]),
    ("", [["", 1.0]]),
    ("[low] (x:1.5) y", [["low", 1 / 1.1], [" ", 1.0], ["x", 1.5], [" y", 1.0]]),
    ("stray) and ] and :1.2) here", [["stray) and ] and :1.2) here", 1.0]]),
    ("time: 5 o'clock", [["time: 5 o'clock", 1.0]]),
    (r"a\b \\ c", [["ab \\ c", 1.0]]),  # a lone backslash vanishes, an escaped one stays
    (r"chino \(gochiusa\)", [["chino (gochiusa)", 1.0]]),
    ("( spaced : 1.25 )", [[" spaced ", 1.25]]),
    ("(neg:-0.5)", [["neg", -0.5]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1.0], ["b", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),  # scaled: no longer a break (as the webui)
    ("BREAKFAST", [["BREAKFAST", 1.0]]),
])
def test_emphasis_grammar_hand_worked(text, expected):
    got = parse_emphasis(text)
    assert [p for p, _ in got] == [p for p, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_emphasis_weight_that_is_not_a_number_is_an_error_naming_it():
    with pytest.raises(EmphasisError, match="1.2.3"):
        parse_emphasis("(red:1.2.3)")


@pytest.fixture(scope="module")
def rules():
    from transformers import CLIPTokenizer

    from lora_trainer.arch.adapters.text import hf_clip_rules
    from lora_trainer.testing.text_encoders import tiny_clip_text_dir

    return hf_clip_rules(CLIPTokenizer.from_pretrained(str(tiny_clip_text_dir())))


def _ids(rules, text):
    return rules.tokenize([text])[0]


def test_a_100_token_caption_is_two_chunks_of_77_with_bos_eos(rules):
    assert len(_ids(rules, "cat")) == 1 and rules.comma_token == _ids(rules, ",")[0]
    text = " ".join(["cat", "dog", "bird", "fish"] * 25)  # 100 single-token words, no comma
    tokens = _ids(rules, text)
    assert len(tokens) == 100
    chunks, count = tokenize_line(text, rules)
    assert [len(c.tokens) for c in chunks] == [77, 77] and count == 100
    assert chunks[0].tokens == [BOS] + tokens[:75] + [EOS]
    assert chunks[1].tokens == [BOS] + tokens[75:] + [EOS] * 51
    assert all(m == 1.0 for c in chunks for m in c.multipliers)


def test_comma_back_tracking_moves_the_last_tags_to_the_next_chunk(rules):
    cat, dog, comma = _ids(rules, "cat")[0], _ids(rules, "dog")[0], rules.comma_token
    text = "cat " * 70 + ", " + "dog " * 10  # the comma is token 71 of 81
    chunks, _ = tokenize_line(text, rules)
    assert chunks[0].tokens == [BOS] + [cat] * 70 + [comma] + [EOS] * 4 + [EOS]
    assert chunks[1].tokens == [BOS] + [dog] * 10 + [EOS] * 65 + [EOS]
    # back-tracking off, or the comma more than 20 tokens back: a hard cut at 75
    chunks, _ = tokenize_line(text, rules, comma_padding_backtrack=0)
    assert chunks[0].tokens[1:76] == [cat] * 70 + [comma] + [dog] * 4
    far = "cat " * 50 + ", " + "dog " * 30
    chunks, _ = tokenize_line(far, rules)
    assert chunks[0].tokens[1:76] == [cat] * 50 + [comma] + [dog] * 24


def test_emphasis_weights_and_break(rules):
    chunks, _ = tokenize_line("a (red:1.5) cat BREAK [dog]", rules, emphasis=True)
    assert len(chunks) == 2
    red, cat, dog = _ids(rules, "red")[0], _ids(rules, " cat")[0], _ids(rules, "dog")[0]
    assert chunks[0].tokens[2:4] == [red, cat] and chunks[0].multipliers[1:5] == [1.0, 1.5, 1.0, 1.0]
    assert chunks[1].tokens[1] == dog and chunks[1].multipliers[1] == pytest.approx(1 / 1.1)
    plain, _ = tokenize_line("a (red:1.5) cat BREAK [dog]", rules, emphasis=False)
    assert len(plain) == 1 and set(plain[0].multipliers) == {1.0}
    assert plain[0].tokens[1:1 + len(_ids(rules, "a (red:1.5) cat BREAK [dog]"))] == \
        _ids(rules, "a (red:1.5) cat BREAK [dog]")  # the brackets are tokenised as text


def test_empty_caption_is_the_empty_chunk_and_batches_pad_with_it(rules):
    chunks, count = tokenize_line("", rules)
    assert len(chunks) == 1 and count == 0 and chunks[0].tokens == empty_chunk(rules).tokens
    assert empty_chunk(rules).tokens == [BOS] + [EOS] * 76
    long_chunks, _ = tokenize_line("cat " * 80, rules)
    padded = pad_to_longest([chunks, long_chunks], rules)
    assert [len(p) for p in padded] == [2, 2] and padded[0][1].tokens == empty_chunk(rules).tokens


def test_open_clip_chunks_pad_with_zero_after_the_first_eos():
    from lora_trainer.arch.adapters.text import open_clip_rules
    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    rules = open_clip_rules()
    chunks, _ = tokenize_line("a photo of a cat", rules)
    ids = transformer_ids(chunks[0], rules)
    assert ids[:7] == [BOS] + rules.tokenize(["a photo of a cat"])[0] + [EOS] and set(ids[7:]) == {0}
    assert chunks[0].tokens[7:] == [EOS] * 70  # the chunk itself keeps EOS padding (weights/lookups use it)


class Lookup:
    """The webui's EmbeddingDatabase protocol: trigger ids -> embedding."""

    def __init__(self, triggers):
        self.triggers = triggers  # [(ids, embedding)]

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self.triggers:
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None


def test_embeddings_take_placeholder_tokens_and_a_fix(rules):
    trigger = _ids(rules, "sks")
    emb = SimpleNamespace(name="sks", vectors=3, vec=torch.zeros(3, 32))
    chunks, _ = tokenize_line("a (sks) cat", rules, emphasis=True, embeddings=Lookup([(trigger, emb)]))
    chunk = chunks[0]
    assert chunk.fixes == [ChunkFix(1, emb)]
    assert chunk.tokens[2:5] == [0, 0, 0] and chunk.multipliers[2:5] == [1.1] * 3
    # an embedding that does not fit in the chunk starts the next one
    chunks, _ = tokenize_line("cat " * 73 + "sks", rules, embeddings=Lookup([(trigger, emb)]))
    assert len(chunks) == 2 and chunks[0].fixes == [] and chunks[1].fixes == [ChunkFix(0, emb)]
    assert chunks[0].tokens[74:] == [EOS] * 3


def test_comma_back_tracking_leaves_an_embeddings_fix_in_the_first_chunk_as_the_webui(rules):
    trigger = _ids(rules, "sks")
    emb = SimpleNamespace(name="sks", vectors=2, vec=torch.zeros(2, 32))
    chunks, _ = tokenize_line("cat " * 70 + ", sks dog dog dog dog", rules, embeddings=Lookup([(trigger, emb)]))
    dog = _ids(rules, "dog")[0]
    assert chunks[0].fixes == [ChunkFix(71, emb)] and chunks[0].tokens[72:] == [EOS] * 5
    assert chunks[1].fixes == [] and chunks[1].tokens[1:7] == [0, 0, dog, dog, dog, dog]


def test_embedding_lookup_matches_the_longest_trigger_first_like_the_webuis_database(rules):
    from lora_trainer.prompts import EmbeddingLookup

    short = SimpleNamespace(name="sks", vectors=1, vec=torch.zeros(1, 32))
    long = SimpleNamespace(name="sks style", vectors=2, vec=torch.zeros(2, 32))
    lookup = EmbeddingLookup({"sks": short, "sks style": long}, rules)
    tokens = _ids(rules, "a sks style photo of sks")
    assert lookup.find_embedding_at_position(tokens, 1) == (long, len(_ids(rules, "sks style")))
    assert lookup.find_embedding_at_position(tokens, len(tokens) - len(_ids(rules, "sks"))) == \
        (short, len(_ids(rules, "sks")))
    assert lookup.find_embedding_at_position(tokens, 0) == (None, None)
    chunks, _ = tokenize_line("a sks style photo of sks", rules, embeddings=lookup)
    assert [f.embedding for f in chunks[0].fixes] == [long, short]


def test_original_emphasis_scales_tokens_and_restores_each_rows_mean():
    z = torch.randn(2, 5, 4) + 0.5
    mult = torch.tensor([[1.0, 1.5, 1.0, 1.0, 1.0], [1.0, 1.0, 0.5, 1.0, 1.0]])
    out = apply_original_emphasis(z, mult)
    for row in range(2):
        scaled = z[row] * mult[row][:, None]
        torch.testing.assert_close(out[row], scaled * (z[row].mean() / scaled.mean()))
        torch.testing.assert_close(out[row].mean(), z[row].mean())
