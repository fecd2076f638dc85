"""Adapters encode long and weighted captions as the webui encodes prompts, on the tiny real-class models: chunks
side by side on the sequence axis, emphasis per chunk, SDXL pooled from the first chunk, batch padding with the
empty caption's encoding (also through the text-encoder cache), textual-inversion fixes with gradients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_model
from test_train_loop import single_torch_thread  # noqa: F401

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.arch.adapters.text import TextConditioning
from lora_trainer.prompts import PromptOptions
from lora_trainer.train.batches import TextEncoderCache

LONG = ", ".join(f"tag{i} (red:1.3) [blue]" for i in range(18))  # ~100 tokens weighted
WEIGHTED = PromptOptions(weighted=True)


def _hf_chunk_ids(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


@torch.no_grad()
def test_sd1_long_caption_is_chunks_side_by_side():
    model = tiny_model("sd1")
    adapter = get_adapter(model)
    emb = model.cond_stage_model
    words = " ".join(["cat", "dog", "bird", "fish"] * 25)  # 100 tokens, no comma: a hard cut at 75
    ids = _hf_chunk_ids(emb.tokenizer, words)
    bos, eos = emb.tokenizer.bos_token_id, emb.tokenizer.eos_token_id
    rows = torch.tensor([[bos] + ids[:75] + [eos], [bos] + ids[75:] + [eos] * 51])
    expected = emb.transformer(input_ids=rows).last_hidden_state.reshape(1, 154, -1)
    text = adapter.encode_text([words])
    assert text.context.shape == (1, 154, expected.shape[-1]) and text.chunks == [2]
    torch.testing.assert_close(text.context, expected)
    one = adapter.encode_text([words], prompts=PromptOptions(max_token_length=75))
    torch.testing.assert_close(one.context, expected[:, :77])


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
@torch.no_grad()
def test_emphasis_is_applied_per_chunk_and_off_means_literal_text(arch):
    adapter = get_adapter(tiny_model(arch))
    weighted = adapter.encode_text(["a (red:1.5) cat"], prompts=WEIGHTED).context
    plain = adapter.encode_text(["a red cat"]).context
    # emphasis multiplies the "red" token's state, then restores the chunk's mean
    mult = torch.ones(1, 77)
    mult[0, 2] = 1.5
    scaled = plain * mult[..., None]
    if arch == "sdxl":  # each encoder's half is weighted on its own (the webui weights each encoder's output)
        d1 = adapter.text_encoders[0].embedder.transformer.config.hidden_size
        halves = [scaled[..., :d1] * (plain[..., :d1].mean() / scaled[..., :d1].mean()),
                  scaled[..., d1:] * (plain[..., d1:].mean() / scaled[..., d1:].mean())]
        torch.testing.assert_close(weighted, torch.cat(halves, -1))
    else:
        torch.testing.assert_close(weighted, scaled * (plain.mean() / scaled.mean()))
    literal = adapter.encode_text(["a (red:1.5) cat"]).context
    assert not torch.allclose(literal, plain, atol=1e-4)  # off: the brackets are tokens of the text


@torch.no_grad()
def test_sdxl_pooled_comes_from_the_first_chunk_and_both_encoders_chunk_alike():
    adapter = get_adapter(tiny_model("sdxl"))
    text = adapter.encode_text([LONG], prompts=WEIGHTED)
    assert text.context.shape[1] == 154 and text.chunks == [2]
    te1, te2 = (p.embedder for p in adapter.text_encoders)
    d1 = te1.transformer.config.hidden_size
    assert text.context.shape[2] == d1 + te2.model.ln_final.normalized_shape[0]
    # pooled of the first chunk only: the same caption cut to one chunk gives the same pooled vector
    first = adapter.encode_text([LONG], prompts=PromptOptions(weighted=True, max_token_length=75))
    torch.testing.assert_close(text.pooled, first.pooled)
    torch.testing.assert_close(text.context[:, :77], first.context)


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
@torch.no_grad()
def test_batches_pad_shorter_captions_with_the_empty_caption_and_the_cache_agrees(arch):
    adapter = get_adapter(tiny_model(arch))
    short, long = "a photo of a cat", LONG
    batch = adapter.encode_text([short, long], prompts=WEIGHTED)
    alone = adapter.encode_text([short], prompts=WEIGHTED)
    empty = adapter.encode_text([""], prompts=WEIGHTED)
    assert batch.chunks == [1, 2] and batch.context.shape[1] == 154
    torch.testing.assert_close(batch.context[0:1, :77], alone.context, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch.context[0:1, 77:], empty.context, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch.context[1:2], adapter.encode_text([long], prompts=WEIGHTED).context,
                               atol=1e-6, rtol=1e-5)
    cache = TextEncoderCache(adapter, 1, prompts=WEIGHTED)
    cache.encode([short])  # cached alone: one chunk, padded when it meets a longer caption
    cached = cache.encode([short, long])
    torch.testing.assert_close(cached.context, batch.context, atol=1e-6, rtol=1e-5)
    if arch == "sdxl":
        torch.testing.assert_close(cached.pooled, batch.pooled, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="empty-caption"):
        TextConditioning.cat([alone, adapter.encode_text([long])])


class Lookup:
    def __init__(self, ids, embedding):
        self.ids, self.embedding = ids, embedding

    def find_embedding_at_position(self, tokens, offset):
        if tokens[offset:offset + len(self.ids)] == self.ids:
            return self.embedding, len(self.ids)
        return None, None


def _token_rows(adapter, word):
    """Each encoder's token-embedding row for a one-token word (what an embedding equal to it must reproduce)."""
    from open_clip.tokenizer import _tokenizer

    rows = []
    for part in adapter.text_encoders:
        if part.kind == "hf_clip":
            (i,) = part.embedder.tokenizer(word, add_special_tokens=False)["input_ids"]
            rows.append(part.embedder.transformer.text_model.embeddings.token_embedding.weight[i])
        else:
            (i,) = _tokenizer.encode(word)
            rows.append(part.embedder.model.token_embedding.weight[i])
    return rows


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_embedding_vectors_replace_their_placeholders_and_get_gradients(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    trigger = adapter.text_encoders[0]
    from lora_trainer.arch.adapters.text import tokenizer_rules

    ids = tokenizer_rules(trigger).tokenize(["sks"])[0]
    rows = [r.detach().clone() for r in _token_rows(adapter, "dog")]
    if arch == "sdxl":
        vec = {"clip_l": rows[0][None].requires_grad_(True), "clip_g": rows[1][None].requires_grad_(True)}
        leaves = list(vec.values())
    else:
        vec = rows[0][None].requires_grad_(True)
        leaves = [vec]
    embedding = SimpleNamespace(name="sks", vectors=1, vec=vec)
    token_modules = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    hooks_before = [dict(m._forward_hooks) for m in token_modules]
    grads_before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    with_emb = adapter.encode_text(["a photo of (sks) on grass"], prompts=WEIGHTED,
                                   embeddings=Lookup(ids, embedding))
    with torch.no_grad():
        reference = adapter.encode_text(["a photo of (dog) on grass"], prompts=WEIGHTED)
    torch.testing.assert_close(with_emb.context, reference.context, atol=1e-6, rtol=1e-5)
    if arch == "sdxl":
        torch.testing.assert_close(with_emb.pooled, reference.pooled, atol=1e-6, rtol=1e-5)
    (with_emb.context.square().sum() + (0 if with_emb.pooled is None else with_emb.pooled.sum())).backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)
    assert [dict(m._forward_hooks) for m in token_modules] == hooks_before  # nothing left on the host's model
    after = [p.grad for p in model.parameters()]
    assert all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(grads_before, after))  # the frozen model gets no gradient


@torch.no_grad()
def test_a_caption_broken_by_tag_shuffling_is_read_as_text_instead_of_stopping_the_run():
    adapter = get_adapter(tiny_model("sd1"))
    broken = "(a, c:1.2.3)"  # "(a, b:1.2), c:1.2.3)" shuffled: the webui would refuse this prompt
    torch.testing.assert_close(adapter.encode_text([broken], prompts=WEIGHTED).context,
                               adapter.encode_text([broken]).context)
