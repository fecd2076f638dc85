"""The background job without a webui: a fake host (lock, progress state, Lora cleanup) and an injected or real
`train()`."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from lora_trainer.config import TrainConfig
from lora_trainer.train import Progress, TrainResult
from lora_trainer.ui.job import JobRunner
from lora_trainer.ui.preflight import JobRefused

sys.path.insert(0, str(Path(__file__).parent))
from ui_fakes import FakeHost, fake_sd1_model, make_dataset  # noqa: E402


def make_config(tmp_path, **kw):
    data = make_dataset(tmp_path / "data")
    base = dict(train_dir=str(data), output_dir=str(tmp_path / "out"), output_name="hero", max_train_steps=3)
    base.update(kw)
    return TrainConfig(**base).validate()


class FakeTrain:
    """Stands in for lora_trainer.train.train; `gate` lets a test hold it mid-run."""

    def __init__(self, host, steps=3, fail=None):
        self.host, self.steps, self.fail = host, steps, fail
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.lock_held = None

    def __call__(self, model, config, progress, cancel, hooks):
        self.lock_held = self.host.lock.locked()
        self.started.set()
        if self.fail:
            raise self.fail
        for step in range(1, self.steps + 1):
            while not self.gate.wait(0.01):
                if cancel.cancelled:
                    return TrainResult("cancelled", f"Cancelled at step {step - 1}")
            if cancel.cancelled:
                return TrainResult("cancelled", f"Cancelled at step {step - 1}")
            progress(Progress("training", step=step, total_steps=self.steps, epoch=1, total_epochs=1,
                              loss=1.0 / step, avg_loss=1.0 / step, lr=1e-4, eta_s=self.steps - step))
        path = Path(config.output_dir) / f"{config.output_name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"lora")
        hooks.on_saved(path)
        return TrainResult("completed", "Done: 3 steps.", files=[path], final_file=path)


def runner_with(tmp_path, **kw):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    fake = FakeTrain(host, **kw)
    return host, fake, JobRunner(host, train_fn=fake)


def wait(job, timeout=30):
    assert job.done.wait(timeout), "job did not finish"


def test_a_job_runs_under_the_gpu_lock_and_reports_progress(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    job = runner.start(make_config(tmp_path))
    wait(job)
    status = runner.status()
    assert status["state"] == "completed" and fake.lock_held
    assert status["final_file"].endswith("hero.safetensors") and status["files"] == [status["final_file"]]
    assert status["step"] == 3 and status["total_steps"] == 3
    assert status["loss_history"] == [[1, 1.0, 1.0], [2, 0.5, 0.5], [3, 1 / 3, 1 / 3]]
    names = [c[0] for c in host.calls]
    assert names[:3] == ["queued", "begin", "release_loras"]
    # everything is final before the webui's progress task ends (the page's last refresh sees it all)
    assert names.index("after_training") < names.index("refresh_loras") < names.index("end")
    updates = [c for c in host.calls if c[0] == "update"]
    assert updates[-1][1:3] == (3, 3) and "step 3/3" in updates[-1][3] and "\n" not in updates[-1][3]
    assert not host.lock.locked()


def test_a_second_job_is_refused_while_one_runs(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    fake.gate.clear()
    job = runner.start(make_config(tmp_path))
    assert fake.started.wait(10)
    with pytest.raises(JobRefused) as err:
        runner.start(make_config(tmp_path, output_name="other"))
    assert err.value.status_code == 409 and "already running" in err.value.message
    with pytest.raises(JobRefused):
        with runner.exclusive("Captioning"):
            pass
    fake.gate.set()
    wait(job)
    assert runner.start(make_config(tmp_path, output_name="second")).done.wait(10)


def test_cancel_and_the_webui_interrupt_both_stop_the_job(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    fake.gate.clear()
    job = runner.start(make_config(tmp_path))
    assert fake.started.wait(10)
    assert runner.cancel()
    wait(job)
    assert job.state == "cancelled"
    assert not runner.cancel()  # nothing left to cancel

    fake.gate.clear()
    job = runner.start(make_config(tmp_path, output_name="again"))
    assert fake.started.wait(10)
    host.interrupt = True
    wait(job)
    assert job.state == "cancelled"


def test_a_crash_ends_in_an_error_state_and_releases_everything(tmp_path, capsys):
    host, fake, runner = runner_with(tmp_path, fail=RuntimeError("boom"))
    job = runner.start(make_config(tmp_path))
    wait(job)
    assert job.state == "error" and "boom" in job.message
    assert [c[0] for c in host.calls][-3:] == ["after_training", "refresh_loras", "end"]
    assert not host.lock.locked()


def test_a_job_waits_for_the_lock_held_by_other_webui_work(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    host.lock.acquire()  # e.g. txt2img is generating
    try:
        job = runner.start(make_config(tmp_path))
        time.sleep(0.2)
        assert job.state == "queued" and not fake.started.is_set()
        assert job.message.startswith("Waiting for txt2img/img2img")  # another webui job holds the queue
        assert "waiting for txt2img/img2img to finish" in runner.busy_reason()
    finally:
        host.lock.release()
    wait(job)
    assert job.state == "completed"
    assert not any("Waiting for" in line for line in job.log)


def test_a_free_queue_never_claims_to_wait_for_another_job(tmp_path):
    """Issue 12: the queued message said "another webui job is running" also when nothing else ran."""
    host, fake, runner = runner_with(tmp_path)
    fake.gate.clear()
    seen = []
    job = runner.start(make_config(tmp_path))
    seen.append(job.message)
    assert fake.started.wait(10)
    seen.append(job.message)
    seen.append(runner.busy_reason())
    fake.gate.set()
    wait(job)
    assert not any("Waiting" in text or "waiting" in text or "another webui job" in text for text in seen), seen


def test_cancel_while_queued_never_trains(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    host.lock.acquire()
    try:
        job = runner.start(make_config(tmp_path))
        runner.cancel()
    finally:
        host.lock.release()
    wait(job)
    assert job.state == "cancelled" and not fake.started.is_set()
    assert ("end", job.task_id) in host.calls


@pytest.mark.parametrize("change, words", [
    (lambda h, c: setattr(h, "_model", None), "No checkpoint is loaded"),
    (lambda h, c: setattr(h._model, "forge_objects", {}), "Forge"),
    (lambda h, c: setattr(h._model, "is_sd3", True), "SD3"),
    (lambda h, c: setattr(c, "train_dir", c.train_dir + "/missing"), "does not exist"),
    (lambda h, c: setattr(c, "reg_dir", c.output_dir), "does not exist"),
    (lambda h, c: setattr(c, "network_weights", "/no/such.safetensors"), "is not a file"),
])
def test_preflight_refuses_with_a_message(tmp_path, change, words):
    host, fake, runner = runner_with(tmp_path)
    config = make_config(tmp_path)
    change(host, config)
    with pytest.raises(JobRefused) as err:
        runner.start(config)
    assert words in err.value.message
    assert runner.job is None and not fake.started.is_set()


def test_preflight_refuses_an_empty_folder_and_an_existing_file(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobRefused, match="is empty"):
        runner.start(make_config(tmp_path, train_dir=str(empty)))
    config = make_config(tmp_path)
    Path(config.output_dir).mkdir(parents=True)
    (Path(config.output_dir) / "hero.safetensors").write_bytes(b"old")
    with pytest.raises(JobRefused, match="already exists") as err:
        runner.start(config)
    assert err.value.field == "output_name"
    config.overwrite = True
    wait(runner.start(config))


def test_unsupported_webui_setup_is_refused(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    host.unsupported_reason = lambda: "the webui runs with --lowvram"
    with pytest.raises(JobRefused, match="--lowvram"):
        runner.start(make_config(tmp_path))


def test_empty_output_dir_defaults_to_the_lora_folder(tmp_path):
    host, fake, runner = runner_with(tmp_path)
    job = runner.start(make_config(tmp_path, output_dir=""))
    wait(job)
    assert Path(job.final_file).parent == tmp_path / "Lora"


def test_real_training_on_a_tiny_model_through_the_runner(tmp_path):
    """The engine's train() on a tiny real-class SD1 model, previews through the (fake) webui txt2img."""
    from lora_trainer.demo import make_demo_dataset
    from lora_trainer.testing import build_tiny_model

    model = build_tiny_model("sd1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    host = FakeHost(model=model, lora_dir=str(tmp_path / "Lora"))
    runner = JobRunner(host)
    data = make_demo_dataset(tmp_path / "data", count=2)
    config = TrainConfig(train_dir=str(data), output_name="tiny-hero", resolution=64, enable_bucket=False,
                         network_dim=4, network_alpha=4, max_train_steps=4, mixed_precision="fp32",
                         gradient_checkpointing=False, sample_every_n_steps=2, sample_prompts=["demo, red circle"],
                         trigger_word="demo").validate()
    job = runner.start(config)
    wait(job, timeout=300)
    status = runner.status()
    assert status["state"] == "completed", status["message"] + "\n" + "\n".join(status["log"])
    final = Path(status["final_file"])
    assert final == tmp_path / "Lora" / "tiny-hero.safetensors" and final.is_file()
    assert final.with_suffix(".preview.png").is_file()  # the Lora card image
    assert len(status["previews"]) == 2 and all(Path(p).is_file() for p in status["previews"])
    assert [row[0] for row in status["loss_history"]] == [1, 2, 3, 4]
    assert len(host.images) == 4  # 2 previews x (base, LoRA 1)
    after = model.state_dict()
    assert all(torch_equal(before[k], after[k]) for k in before)  # the model is left as it was


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
