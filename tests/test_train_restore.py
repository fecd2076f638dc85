"""The restore contract: after success, cancel, an injected exception, an injected NaN or an out-of-memory error
the model is exactly as before (weights, dtype, device, requires_grad, train/eval, attributes, hooks, forwards)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.lora_file import load_lora
from lora_trainer.testing import build_tiny_model
from lora_trainer.train import CancelToken, TrainHooks, train
from lora_trainer.train.model_guard import ModelGuard
from lora_trainer.train.verify import model_state, state_differences


@pytest.fixture
def sd1():
    model = tiny_model("sd1")
    # the webui's state: UNet trainable (not frozen), a hook registered by someone else, a mixed train flag
    handle = model.model.diffusion_model.out.register_forward_hook(lambda m, i, o: None)
    model.model.diffusion_model.time_embed.train()
    before = model_state(model)
    yield model, before
    assert state_differences(before, model_state(model)) == []
    handle.remove()
    model.model.diffusion_model.time_embed.eval()


def test_success_restores(sd1, tmp_path):
    model, before = sd1
    result = train(model, make_config(tmp_path, "sd1", steps=2, gradient_checkpointing=True))
    assert result.status == "completed", result.message
    assert state_differences(before, model_state(model)) == []


def test_cancel_saves_what_was_trained_and_restores(sd1, tmp_path):
    model, before = sd1
    token = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.phase)
        if p.phase == "training" and p.step == 2:
            token.cancel()

    result = train(model, make_config(tmp_path, "sd1", steps=6), progress=progress, cancel=token)
    assert result.status == "cancelled" and result.steps_done == 2, result.message
    assert result.final_file is not None and result.final_file.exists()
    assert load_lora(result.final_file)[1]["ss_steps"] == "2"
    assert "Cancelled at step 2/6" in result.message
    assert seen[0] == "preparing" and "caching" in seen and seen[-1] == "done"
    assert state_differences(before, model_state(model)) == []


def test_cancel_through_extra_check_before_the_first_step(sd1, tmp_path):
    model, _ = sd1
    result = train(model, make_config(tmp_path, "sd1", steps=3), cancel=CancelToken(extra_check=lambda: True))
    assert result.status == "cancelled" and result.files == [] and "nothing was" in result.message


def test_injected_exception_is_reported_and_restores(sd1, tmp_path):
    model, before = sd1

    def progress(p):
        if p.phase == "training" and p.step == 1:
            raise RuntimeError("boom from a callback")

    result = train(model, make_config(tmp_path, "sd1", steps=4, gradient_checkpointing=True), progress=progress)
    assert result.status == "error" and "boom from a callback" in result.message
    assert state_differences(before, model_state(model)) == []


def test_injected_nan_stops_keeps_the_last_good_save_and_restores(sd1, tmp_path):
    model, before = sd1

    def poison(step, epoch, network, adapter):
        if step == 2:
            with torch.no_grad():
                next(iter(network.parameters())).fill_(float("nan"))

    config = make_config(tmp_path, "sd1", steps=6, save_every_n_steps=1, sample_every_n_steps=1)
    result = train(model, config, hooks=TrainHooks(on_sample=poison))
    assert result.status == "nan", result.message
    assert result.steps_done == 2 and result.final_file.name == "demo-sd1-step00000002.safetensors"
    assert [f.name for f in result.files] == ["demo-sd1-step00000001.safetensors", "demo-sd1-step00000002.safetensors"]
    assert not (tmp_path / "out" / "demo-sd1.safetensors").exists()
    assert "last good save" in result.message and "learning rate" in result.message
    assert state_differences(before, model_state(model)) == []


def test_nan_weights_are_never_saved(sd1, tmp_path):
    """Weights broken after the last loss was computed (e.g. a NaN gradient step), then a cancel: the cancel's
    save is refused and the result points at the last good file."""
    model, before = sd1
    token = CancelToken()

    def poison_and_cancel(step, epoch, network, adapter):
        if step == 2:
            with torch.no_grad():
                next(iter(network.parameters())).fill_(float("inf"))
            token.cancel()

    config = make_config(tmp_path, "sd1", steps=6, save_every_n_steps=1, sample_every_n_steps=1)
    result = train(model, config, cancel=token, hooks=TrainHooks(on_sample=poison_and_cancel))
    assert result.status == "nan" and "LoRA weights became NaN/inf" in result.message, result.message
    assert result.final_file.name == "demo-sd1-step00000002.safetensors" and len(result.files) == 2
    assert state_differences(before, model_state(model)) == []


def test_out_of_memory_is_reported_with_settings_to_lower(sd1, tmp_path, monkeypatch):
    from lora_trainer.arch.adapters.sd import SDAdapter

    model, before = sd1

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SDAdapter, "predict", oom)
    config = make_config(tmp_path, "sd1", steps=2, train_batch_size=2, gradient_checkpointing=False)
    result = train(model, config)
    assert result.status == "oom"
    assert "train_batch_size 2 → 1" in result.message and "gradient_checkpointing" in result.message
    assert state_differences(before, model_state(model)) == []


def test_sdxl_restores_after_training_the_text_encoders(tmp_path):
    model = tiny_model("sdxl")
    before = model_state(model)
    result = train(model, make_config(tmp_path, "sdxl", steps=2, gradient_checkpointing=True))
    assert result.status == "completed", result.message
    assert state_differences(before, model_state(model)) == []


def test_guard_undoes_dtype_device_flag_hook_and_child_changes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)))
    model[0].half()  # like the webui's fp16 UNet; the trainer may upcast (fp16 -> fp32 -> fp16 is lossless)
    model.eval()
    before = model_state(model)
    guard = ModelGuard(model).snapshot()
    model[0].float()
    model.requires_grad_(False)
    model.train()
    model[0].register_forward_pre_hook(lambda m, i: None)
    model[1].forward = lambda x: x
    model[1].added_attribute = 1
    model[1][0] = torch.nn.Identity()
    model.extra = torch.nn.Linear(1, 1)
    assert guard.restore() == []
    assert state_differences(before, model_state(model)) == []


def test_guard_reports_in_place_weight_changes():
    model = torch.nn.Linear(2, 2)
    guard = ModelGuard(model).snapshot()
    with torch.no_grad():
        model.weight.add_(1)
    assert guard.restore() == ["weight"]


def test_guard_undoes_added_tokens_and_resized_embedding_tables():
    """A trainer that added its token the diffusers way (tokenizer.add_tokens + a resized table) would leave the
    webui's tokenizers and tables changed: the guard puts both back and names them."""
    model = build_tiny_model("sdxl")  # first: it makes torchvision importable for open_clip
    import open_clip

    before = model_state(model)
    guard = ModelGuard(model).snapshot()
    te1 = model.conditioner.embedders[0]
    table = te1.transformer.get_input_embeddings()
    te1.tokenizer.add_tokens(["<zkw>"])
    te1.transformer.resize_token_embeddings(len(te1.tokenizer))
    oc = open_clip.tokenizer._tokenizer
    oc.encoder["<zkw>"], oc.decoder[len(oc.decoder)] = len(oc.encoder), "<zkw>"
    te2_table = model.conditioner.embedders[1].model.token_embedding  # resized in place, the other way to do it
    rows = te2_table.num_embeddings
    te2_table.weight = torch.nn.Parameter(torch.cat([te2_table.weight.detach(), te2_table.weight.detach()[:1]]))
    te2_table.num_embeddings += 1
    assert state_differences(before, model_state(model)) != []
    changed = guard.restore()
    assert any("tokenizer" in c and "49409" in c for c in changed), changed
    assert any("open_clip" in c for c in changed) and any("num_embeddings" in c for c in changed), changed
    assert te2_table.num_embeddings == rows == te2_table.weight.shape[0]
    assert len(te1.tokenizer) == 49408 and "<zkw>" not in oc.encoder
    assert te1.transformer.get_input_embeddings() is table and table.weight.shape[0] == 49408 == table.num_embeddings
    assert te1.tokenizer("a <zkw>", add_special_tokens=False)["input_ids"] == \
        build_tiny_model("sdxl").conditioner.embedders[0].tokenizer("a <zkw>", add_special_tokens=False)["input_ids"]
    assert state_differences(before, model_state(model)) == []


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_guard_reports_nothing_when_tokenizers_were_only_used(arch):
    """Tokenizing (which fills the tokenizers' caches) is not a change; only a changed vocabulary is."""
    from lora_trainer.arch.adapters import get_adapter

    model = tiny_model(arch)
    guard = ModelGuard(model).snapshot()
    with torch.no_grad():
        get_adapter(model).encode_text(["a photo of zkw, a new word"], 1)
    assert guard.restore() == []
