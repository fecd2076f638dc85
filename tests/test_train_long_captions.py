"""Training with captions of different chunk counts (weighted, ~100 tokens next to short ones): the loop pads each
batch to its longest caption, the UNet takes the longer context, and the text-encoder cache gives the same
conditioning as encoding every step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.arch.adapters.sd import SDAdapter
from lora_trainer.arch.adapters.sdxl import SDXLAdapter
from lora_trainer.train import train

LONG = "demo, " + ", ".join(f"(tag{i}:1.2) [shape{i}]" for i in range(16))  # ~100 tokens once parsed


def _long_captions(config):
    files = sorted(Path(config.train_dir).rglob("*.txt"))
    for path in files[::2]:
        path.write_text(LONG, encoding="utf-8")
    return files


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_mixed_caption_lengths_train_and_the_cache_matches_direct_encoding(tmp_path, monkeypatch, arch):
    adapter_class = SDXLAdapter if arch == "sdxl" else SDAdapter
    seen = []
    original = adapter_class.predict

    def spy(self, noisy, timesteps, text, sizes=None):
        seen.append((text.context.detach().clone(), None if text.pooled is None else text.pooled.detach().clone(),
                     text.chunks))
        return original(self, noisy, timesteps, text, sizes)

    monkeypatch.setattr(adapter_class, "predict", spy)
    model = tiny_model(arch)
    runs = {}
    # text_encoder_lr 0: the text-encoder LoRA stays zero, so encoding every step must equal the frozen cache
    for name, overrides in (("direct", dict(train_text_encoder=True, text_encoder_lr=0.0)),
                            ("cached", dict(train_text_encoder=False, cache_text_encoder_outputs=True))):
        seen.clear()
        config = make_config(tmp_path / name, arch, steps=3, repeats=1, weighted_captions=True, **overrides)
        _long_captions(config)
        result = train(model, config)
        assert result.status == "completed", result.message
        runs[name] = list(seen)
    assert len(runs["direct"]) == len(runs["cached"]) == 3
    assert any(sorted(chunks) == [1, 2] for _, _, chunks in runs["direct"])  # a batch mixing the two lengths
    for (direct, direct_pooled, chunks), (cached, cached_pooled, _) in zip(runs["direct"], runs["cached"]):
        assert direct.shape[1] == 77 * max(chunks)  # padded to the batch's longest caption
        torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-4)
        if arch == "sdxl":
            torch.testing.assert_close(cached_pooled, direct_pooled, atol=1e-5, rtol=1e-4)


def test_a_caption_the_emphasis_grammar_rejects_stops_before_training_naming_the_file(tmp_path):
    config = make_config(tmp_path, "sd1", steps=2, weighted_captions=True)
    bad = sorted(Path(config.train_dir).rglob("*.txt"))[0]
    bad.write_text("demo, (red:1.2.3) circle", encoding="utf-8")
    result = train(tiny_model("sd1"), config)
    assert result.status == "error" and result.message.startswith("weighted_captions")
    assert bad.name.replace(".txt", "") in result.message and "1.2.3" in result.message
    config.weighted_captions = False  # off, brackets are text: the same caption trains
    config.output_dir = str(tmp_path / "out2")
    assert train(tiny_model("sd1"), config).status == "completed"
