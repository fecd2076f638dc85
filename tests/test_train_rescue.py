"""Never lose a run (issue 12): after the first optimizer step every failure ends with the LoRA trained so far
saved atomically, the message naming the file and the cause, and the model restored; a failing preview is only a
warning, and three in a row turn previews off."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.lora_file import load_lora
from lora_trainer.train import TrainHooks, train
from lora_trainer.train import loop as loop_module
from lora_trainer.train.rescue import rescue_name
from lora_trainer.train.verify import model_state, state_differences


@pytest.fixture
def sd1():
    model = tiny_model("sd1")
    before = model_state(model)
    yield model
    assert state_differences(before, model_state(model)) == []  # the model is restored after every test


def no_temp_files(folder):
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")] == []


def test_a_preview_that_raises_at_step_2_of_4_is_a_warning_and_the_run_completes(sd1, tmp_path):
    """The offline webui: 'Approx NN' downloads vaeapprox on the first preview, which raises URLError."""
    from urllib.error import URLError

    calls, log = [], []

    def preview(step, epoch, network, adapter):
        calls.append(step)
        if step == 2:
            raise URLError("[Errno -3] Temporary failure in name resolution")

    config = make_config(tmp_path, "sd1", steps=4, sample_every_n_steps=1)
    result = train(sd1, config, hooks=TrainHooks(on_sample=preview, on_log=log.append))
    assert result.status == "completed", result.message
    assert calls == [1, 2, 3, 4]  # the run went on, with previews
    assert result.final_file.exists() and load_lora(result.final_file)[1]["ss_steps"] == "4"
    assert "Warning: the preview at step 2 failed (URLError" in result.message
    assert any("warning: the preview at step 2 failed: URLError" in line for line in log)
    assert no_temp_files(tmp_path / "out")


def test_three_preview_failures_in_a_row_turn_previews_off(sd1, tmp_path):
    calls, log = [], []

    def preview(step, epoch, network, adapter):
        calls.append(step)
        raise OSError(f"cannot write preview {step}")

    config = make_config(tmp_path, "sd1", steps=6, sample_every_n_steps=1)
    result = train(sd1, config, hooks=TrainHooks(on_sample=preview, on_log=log.append))
    assert result.status == "completed", result.message
    assert calls == [1, 2, 3]
    assert any("previews are turned off for the rest of this run after 3 failures" in line for line in log)
    assert "Previews were turned off" in result.message


def test_one_good_preview_resets_the_failure_count(sd1, tmp_path):
    calls = []

    def preview(step, epoch, network, adapter):
        calls.append(step)
        if step % 3:  # fails at 1, 2, 4, 5: never three in a row
            raise RuntimeError("flaky")

    result = train(sd1, make_config(tmp_path, "sd1", steps=6, sample_every_n_steps=1),
                   hooks=TrainHooks(on_sample=preview))
    assert result.status == "completed" and calls == [1, 2, 3, 4, 5, 6]


def test_a_failing_progress_callback_after_step_2_saves_the_lora_under_the_final_name(sd1, tmp_path):
    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise RuntimeError("boom from a callback")

    result = train(sd1, make_config(tmp_path, "sd1", steps=5, gradient_checkpointing=True), progress=progress)
    assert result.status == "error"
    path = tmp_path / "out" / "demo-sd1.safetensors"
    assert result.final_file == path and result.files == [path]
    assert load_lora(path)[1]["ss_steps"] == "2"
    assert "boom from a callback" in result.message and str(path) in result.message
    assert "step 2/5" in result.message
    assert no_temp_files(tmp_path / "out")


def test_a_crash_in_the_training_step_saves_the_last_completed_step(sd1, tmp_path, monkeypatch):
    real = loop_module.diffusion_loss
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise ValueError("a bug in a hook")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "diffusion_loss", failing)
    result = train(sd1, make_config(tmp_path, "sd1", steps=6))
    assert result.status == "error" and "ValueError: a bug in a hook" in result.message
    assert load_lora(result.final_file)[1]["ss_steps"] == "3"


def test_out_of_memory_mid_run_saves_and_keeps_the_advice(sd1, tmp_path, monkeypatch):
    real = loop_module.diffusion_loss
    calls = []

    def oom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "diffusion_loss", oom)
    result = train(sd1, make_config(tmp_path, "sd1", steps=6, train_batch_size=2))
    assert result.status == "oom" and "train_batch_size 2 → 1" in result.message
    assert result.final_file is not None and str(result.final_file) in result.message
    assert load_lora(result.final_file)[1]["ss_steps"] == "2"


def test_a_failing_on_saved_hook_reports_the_file_already_written(sd1, tmp_path):
    def on_saved(path):
        raise RuntimeError("the card refresh broke")

    config = make_config(tmp_path, "sd1", steps=4, save_every_n_steps=2)
    result = train(sd1, config, hooks=TrainHooks(on_saved=on_saved))
    assert result.status == "error" and "the card refresh broke" in result.message
    step2 = tmp_path / "out" / "demo-sd1-step00000002.safetensors"
    assert result.files == [step2] and result.final_file == step2 and str(step2) in result.message
    assert not (tmp_path / "out" / "demo-sd1.safetensors").exists()  # no second copy of the same weights


def test_an_existing_final_file_is_never_replaced_by_a_partial_run(sd1, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo-sd1.safetensors").write_bytes(b"an earlier, good LoRA")

    def progress(p):
        if p.phase == "training" and p.step == 3:
            raise RuntimeError("boom")

    config = make_config(tmp_path, "sd1", steps=5)  # overwrite=True: a *completed* run may replace it
    result = train(sd1, config, progress=progress)
    assert (out / "demo-sd1.safetensors").read_bytes() == b"an earlier, good LoRA"
    assert result.final_file == out / "demo-sd1-step00000003.safetensors"
    assert load_lora(result.final_file)[1]["ss_steps"] == "3"


def test_failure_before_the_first_step_saves_nothing(sd1, tmp_path):
    def progress(p):
        if p.phase == "training":
            raise RuntimeError("boom at the start")

    result = train(sd1, make_config(tmp_path, "sd1", steps=3), progress=progress)
    assert result.status == "error" and result.files == [] and result.final_file is None
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_keyboard_interrupt_is_a_cancel_that_keeps_the_weights(sd1, tmp_path):
    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise KeyboardInterrupt

    result = train(sd1, make_config(tmp_path, "sd1", steps=5), progress=progress)
    assert result.status == "cancelled" and load_lora(result.final_file)[1]["ss_steps"] == "2"


def test_rescue_with_save_state_also_writes_the_state(sd1, tmp_path):
    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise RuntimeError("boom")

    result = train(sd1, make_config(tmp_path, "sd1", steps=4, save_state=True), progress=progress)
    assert result.state_dirs and (result.state_dirs[-1] / "train_state.json").is_file()
    assert "resume state" in result.message


def test_a_rescue_that_cannot_write_says_so(sd1, tmp_path, monkeypatch):
    import lora_trainer.train.rescue as rescue

    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise RuntimeError("boom")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rescue, "save_session_lora", disk_full)
    result = train(sd1, make_config(tmp_path, "sd1", steps=4), progress=progress)
    assert result.status == "error" and "boom" in result.message
    assert "No space left on device" in result.message and "nothing was saved" in result.message


def test_rescue_name_prefers_the_free_final_name_then_the_step_file(tmp_path):
    assert rescue_name(tmp_path, "x", 7, []).name == "x.safetensors"
    (tmp_path / "x.safetensors").write_bytes(b"")
    assert rescue_name(tmp_path, "x", 7, []).name == "x-step00000007.safetensors"
    (tmp_path / "x-step00000007.safetensors").write_bytes(b"")
    assert rescue_name(tmp_path, "x", 7, []).name == "x-step00000007-2.safetensors"
    assert rescue_name(tmp_path, "x", 7, [tmp_path / "x.safetensors"]).name == "x.safetensors"


def test_a_rescued_file_carries_the_same_metadata_as_a_scheduled_save(tmp_path):
    """v-prediction, model identity...: a file saved after a failure must load like any other file of the run."""
    model = tiny_model("sd2v")

    def progress(p):
        if p.phase == "training" and p.step == 2:
            raise RuntimeError("boom")

    hooks = TrainHooks(model_identity={"name": "base.safetensors", "hash": "0123456789"})
    config = make_config(tmp_path, "sd2v", steps=3, save_every_n_steps=1)
    config.output_name = "scheduled"
    scheduled = train(model, config, hooks=hooks)
    config.output_name = "rescued"
    rescued = train(model, config, progress=progress, hooks=hooks)
    assert rescued.status == "error" and rescued.final_file.name == "rescued.safetensors"
    a = load_lora(scheduled.files[0])[1]
    b = load_lora(rescued.final_file)[1]
    assert set(a) == set(b)
    volatile = {"ss_output_name", "ss_session_id", "ss_training_started_at", "ss_steps", "ss_epoch",
                "sshs_model_hash", "sshs_legacy_hash", "modelspec.title", "modelspec.date", "ss_training_finished_at"}
    assert {k: v for k, v in a.items() if k not in volatile} == {k: v for k, v in b.items() if k not in volatile}
