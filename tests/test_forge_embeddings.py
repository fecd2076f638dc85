"""Pivotal tuning's embeddings in Forge (ui/forge.py): Forge keeps one EmbeddingDatabase per text-processing engine
(backend/text_processing/textual_inversion.py), not A1111's `sd_hijack.model_hijack.embedding_db`. Runs on Forge's
real database class (FORGE_DIR)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not FORGE_DIR, reason="FORGE_DIR is not set")


@pytest.fixture()
def forge_host(tmp_path, monkeypatch):
    try:
        from lora_trainer.testing.forge_layout import import_forge_backend

        import_forge_backend(FORGE_DIR)
        from backend.text_processing.textual_inversion import EmbeddingDatabase
    except ImportError as exc:
        pytest.skip(f"Forge's backend does not import here ({exc}); use Forge's pins")
    from transformers import CLIPTokenizer

    from lora_trainer.testing.text_encoders import tiny_clip_text_dir
    from lora_trainer.ui.forge import ForgeHost

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_clip_text_dir(32, 3, 4)))
    engines = {}
    for name in ("text_processing_engine_l", "text_processing_engine_g"):
        db = EmbeddingDatabase(tokenizer)
        db.add_embedding_dir(str(tmp_path))
        engines[name] = SimpleNamespace(embeddings=db)
    model = SimpleNamespace(forge_objects=object(), **engines)
    host = ForgeHost()
    monkeypatch.setattr(host, "model", lambda: model)
    return host, [e.embeddings for e in engines.values()], tmp_path


def test_preview_registers_the_trained_vectors_in_every_engine_then_puts_back_what_was_there(forge_host):
    host, dbs, _ = forge_host
    vec = {"clip_l": torch.randn(2, 32, requires_grad=True), "clip_g": torch.randn(2, 32, requires_grad=True)}
    trained = SimpleNamespace(name="zkw", vec=vec, vectors=2, shape=64)
    with host.preview_embedding(trained):
        for db in dbs:
            shown = db.word_embeddings["zkw"]
            assert torch.equal(shown.vec["clip_l"], vec["clip_l"]) and not shown.vec["clip_l"].requires_grad
            ids = db.tokenizer(["zkw"], add_special_tokens=False)["input_ids"][0]
            assert db.find_embedding_at_position(ids, 0)[0] is shown
    for db in dbs:
        assert "zkw" not in db.word_embeddings and not db.ids_lookup


def test_reload_embeddings_reads_the_new_file_in_every_engine(forge_host):
    host, dbs, folder = forge_host
    save_file({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 32)}, str(folder / "zkw.safetensors"))
    assert all("zkw" not in db.word_embeddings for db in dbs)
    host.reload_embeddings()
    for db in dbs:
        assert db.word_embeddings["zkw"].vectors == 2
