"""Pivotal tuning end to end on the tiny real-class SD1 and SDXL models: the new vectors train until pivotal_frac
and then stay exactly as they are while the LoRA trains on; the LoRA file bundles them as the webui's Lora extension
reads them, `<token>.safetensors` lands in the embeddings folder, and the model (tokenizers and embedding tables
included) is exactly as before. With WEBUI_DIR set, the webui's own reading code reads both files back equal."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.config import TrainConfig
from lora_trainer.lora_file import load_lora
from lora_trainer.pivotal import PivotalEmbeddings, read_bundle
from lora_trainer.train import TrainHooks, train
from lora_trainer.train.verify import model_state, state_differences

KEYS = {"sd1": ["clip_l"], "sdxl": ["clip_l", "clip_g"]}


def _as_dict(vec, arch):
    return dict(vec) if isinstance(vec, dict) else {KEYS[arch][0]: vec}


def _lora_only(tensors):
    return {k: v for k, v in tensors.items() if not k.startswith("bundle_emb.")}


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_pivotal_run_trains_then_freezes_and_saves_both_files(arch, tmp_path):
    model = tiny_model(arch)
    before = model_state(model)
    emb_dir = tmp_path / "embeddings"
    config = make_config(tmp_path, arch, steps=6, save_every_n_steps=1, save_precision="fp32",
                         train_text_encoder=False, pivotal_tuning=True, pivotal_token="zkw", pivotal_frac=0.5,
                         pivotal_lr=5e-2, pivotal_embeddings_dir=str(emb_dir),
                         optimizer_args={"weight_decay": 0.1})  # decay would still move frozen vectors if stepped
    logs = []
    result = train(model, config, hooks=TrainHooks(on_log=logs.append))
    assert result.status == "completed", result.message
    assert "changed during training" not in result.message
    assert state_differences(before, model_state(model)) == []  # tokenizers and tables included
    assert config.trigger_word == "zkw"

    initial = PivotalEmbeddings.create(get_adapter(model), config).tensors()
    files = list(result.files)  # in the order written: step 1..5, then the final file (step 6)
    assert [f.name for f in files][-1] == f"demo-{arch}.safetensors" and len(files) == 6
    saved = []
    for path in files:
        tensors, _ = load_lora(path)
        bundled = read_bundle(tensors)
        assert list(bundled) == ["zkw"]
        saved.append((_as_dict(bundled["zkw"], arch), _lora_only(tensors)))
    steps, loras = [v for v, _ in saved], [lora for _, lora in saved]
    assert sorted(steps[0]) == sorted(KEYS[arch])
    # training steps 1-3 (the first half) change the vectors, steps 4-6 leave them exactly as they were
    previous = initial
    for i in range(3):
        assert all(not torch.equal(steps[i][k], previous[k]) for k in KEYS[arch]), f"step {i + 1} did not train"
        previous = steps[i]
    for i in range(3, 6):
        assert all(torch.equal(steps[i][k], steps[2][k]) for k in KEYS[arch]), f"step {i + 1} moved frozen vectors"
    assert any(not torch.equal(loras[5][k], loras[2][k]) for k in loras[2])  # the LoRA trains on
    assert any("frozen at step 3" in line for line in logs), logs
    from lora_trainer.lora_file.inspect import inspect_lora

    report = inspect_lora(result.final_file)
    assert report.problems == [] and report.arch == arch and any("bundled embeddings" in n for n in report.notes)

    separate = load_file(str(emb_dir / "zkw.safetensors"))
    if arch == "sdxl":
        assert sorted(separate) == ["clip_g", "clip_l"]
        assert all(torch.equal(separate[k], steps[5][k]) for k in KEYS[arch])
    else:
        assert list(separate) == ["emb_params"] and torch.equal(separate["emb_params"], steps[5]["clip_l"])

    webui_dir = os.environ.get("WEBUI_DIR")
    if webui_dir:
        from webui_bundle_source import webui_functions

        webui = webui_functions(webui_dir)
        tensors, _ = load_lora(result.final_file)
        data = webui.bundle_embeddings_of(tensors)
        embedding = webui.create_embedding_from_data(data["zkw"], "zkw")
        assert embedding.vectors == config.pivotal_vectors_per_token
        assert all(torch.equal(v, steps[5][k]) for k, v in _as_dict(embedding.vec, arch).items())
        from_folder = webui.create_embedding_from_data(separate, "zkw")
        assert all(torch.equal(v, steps[5][k]) for k, v in _as_dict(from_folder.vec, arch).items())
        assert from_folder.shape == embedding.shape


def test_an_existing_embedding_file_is_not_overwritten(tmp_path):
    model = tiny_model("sd1")
    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    (emb_dir / "zkw.safetensors").write_bytes(b"someone else's")
    config = make_config(tmp_path, "sd1", steps=1, overwrite=False, pivotal_tuning=True, pivotal_token="zkw",
                         pivotal_embeddings_dir=str(emb_dir))
    result = train(model, config)
    assert result.status == "error" and "zkw.safetensors already exists" in result.message
    assert (emb_dir / "zkw.safetensors").read_bytes() == b"someone else's"


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_the_token_changes_the_conditioning_and_only_where_it_is(arch):
    adapter = get_adapter(tiny_model(arch))
    config = TrainConfig(train_dir="x", output_dir="y", pivotal_tuning=True, pivotal_token="zkw").validate()
    emb = PivotalEmbeddings.create(adapter, config)
    with torch.no_grad():
        plain = adapter.encode_text(["a photo of zkw", "a photo of a cat"], 1)
        with_token = adapter.encode_text(["a photo of zkw", "a photo of a cat"], 1, embeddings=emb.lookup)
    assert not torch.allclose(plain.context[0], with_token.context[0])
    assert torch.allclose(plain.context[1], with_token.context[1])  # no token: the same conditioning
    text = adapter.encode_text(["zkw"], 1, embeddings=emb.lookup)
    text.context.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in emb.parameters())  # autograd reaches them


def test_resume_carries_the_vectors_and_their_freeze(tmp_path):
    """A state saved while the vectors train (step 2 of 6, freeze at 3) resumes to the same vectors and LoRA."""
    model = tiny_model("sd1")
    settings = dict(steps=6, save_every_n_steps=2, save_state=True, save_precision="fp32", train_text_encoder=False,
                    pivotal_tuning=True, pivotal_token="zkw", pivotal_lr=5e-2)
    full = train(model, make_config(tmp_path / "full", "sd1", **settings))
    assert full.status == "completed", full.message
    state = full.files[0].with_name("demo-sd1-step00000002-state")
    resumed = train(model, make_config(tmp_path / "resumed", "sd1", resume_state=str(state), **settings))
    assert resumed.status == "completed", resumed.message
    expected, _ = load_lora(full.final_file)
    got, _ = load_lora(resumed.final_file)
    assert expected.keys() == got.keys() and "bundle_emb.zkw.string_to_param.*" in got
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_starting_from_a_pivotal_lora_file_skips_its_bundle(tmp_path):
    model = tiny_model("sd1")
    first = train(model, make_config(tmp_path / "a", "sd1", steps=1, pivotal_tuning=True, pivotal_token="zkw",
                                     train_text_encoder=False))
    assert first.status == "completed", first.message
    again = train(model, make_config(tmp_path / "b", "sd1", steps=1, network_weights=str(first.final_file),
                                     train_text_encoder=False))
    assert again.status == "completed", again.message


def test_previews_get_the_token_vectors_and_the_host_knows_the_token_only_while_they_run(tmp_path):
    """The engine hands previews the live vectors; PreviewMaker holds host.preview_embedding around every txt2img
    (the webui registers the token there and unregisters it after)."""
    import contextlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from ui_fakes import FakeHost

    from lora_trainer.ui.job import TrainingJob
    from lora_trainer.ui.previews import PreviewMaker

    class TokenHost(FakeHost):
        known = None
        seen = []

        @contextlib.contextmanager
        def preview_embedding(self, embedding):
            TokenHost.known = embedding
            try:
                yield
            finally:
                TokenHost.known = None

        def txt2img(self, prompt, *args, **kwargs):
            known = TokenHost.known
            TokenHost.seen.append((prompt, known.name, {k: v.detach().clone() for k, v in known.params.items()}))
            return super().txt2img(prompt, *args, **kwargs)

    config = make_config(tmp_path, "sd1", steps=4, sample_every_n_steps=1, sample_weights=[1.0],
                         train_text_encoder=False, pivotal_tuning=True, pivotal_token="zkw", pivotal_lr=5e-2)
    host = TokenHost()
    previews = PreviewMaker(host, TrainingJob(config, "task(x)", "tiny", "sd1"))
    result = train(tiny_model("sd1"), config, hooks=TrainHooks(on_sample=previews))
    assert result.status == "completed", result.message
    assert [(p, name) for p, name, _ in TokenHost.seen] == [("zkw", "zkw")] * 4  # the trigger word is the prompt
    first, second = TokenHost.seen[0][2]["clip_l"], TokenHost.seen[1][2]["clip_l"]
    assert not torch.equal(first, second)  # each preview sees the vectors trained so far
    assert TokenHost.known is None


def test_pivotal_with_the_text_encoder_trained_too(tmp_path):
    model = tiny_model("sd1")
    before = model_state(model)
    config = make_config(tmp_path, "sd1", steps=2, save_precision="fp32", pivotal_tuning=True, pivotal_token="zkw",
                         pivotal_lr=5e-2, train_text_encoder=True)
    result = train(model, config)
    assert result.status == "completed", result.message
    tensors, _ = load_lora(result.final_file)
    initial = PivotalEmbeddings.create(get_adapter(model), config).tensors()["clip_l"]
    assert not torch.equal(read_bundle(tensors)["zkw"], initial)
    assert any(k.startswith("lora_te_") and k.endswith("lora_up.weight") and v.abs().sum() > 0
               for k, v in tensors.items())  # the TE LoRA trained as well (lora_up starts at zero)
    assert state_differences(before, model_state(model)) == []


def test_pivotal_is_refused_under_medvram(tmp_path):
    model = tiny_model("sd1")
    before = model_state(model)
    model.lowvram = True  # what the webui sets for --medvram / --lowvram
    try:
        result = train(model, make_config(tmp_path, "sd1", steps=1, train_text_encoder=False, pivotal_tuning=True,
                                          pivotal_token="zkw"))
    finally:
        del model.lowvram
    assert result.status == "error" and result.message.startswith("pivotal_tuning:") and "--medvram" in result.message
    assert state_differences(before, model_state(model)) == []


def test_a_rescue_save_keeps_the_trained_vectors(tmp_path):
    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise RuntimeError("boom from a callback")

    config = make_config(tmp_path, "sd1", steps=5, train_text_encoder=False, pivotal_tuning=True,
                         pivotal_token="zkw", pivotal_lr=5e-2, save_precision="fp32")
    result = train(tiny_model("sd1"), config, progress=progress)
    assert result.status == "error" and result.final_file is not None
    tensors, _ = load_lora(result.final_file)
    initial = PivotalEmbeddings.create(get_adapter(tiny_model("sd1")), config).tensors()["clip_l"]
    assert not torch.equal(read_bundle(tensors)["zkw"], initial)  # the 2 trained steps of the vectors are kept
