"""Issue 12 through the job runner with the real engine on a tiny SD1 model: a preview failing offline is a
warning, Reload UI never cancels (Interrupt does), and a webui shutdown saves the LoRA or leaves no temp file."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from urllib.error import URLError

import pytest
from conftest import tiny_model

from lora_trainer.config import TrainConfig
from lora_trainer.lora_file import load_lora
from lora_trainer.train.verify import model_state, state_differences
from lora_trainer.ui import lifecycle
from lora_trainer.ui.job import JobRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_job import FakeTrain  # noqa: E402
from ui_fakes import FakeHost, WebuiLikeHost, fake_sd1_model  # noqa: E402


def tiny_config(tmp_path, steps=4, **kw):
    from lora_trainer.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", count=2)
    base = dict(train_dir=str(data), output_dir=str(tmp_path / "out"), output_name="hero", resolution=64,
                enable_bucket=False, network_dim=4, network_alpha=4, max_train_steps=steps, mixed_precision="fp32",
                gradient_checkpointing=False, save_precision="fp32", cache_latents=False)  # steps only
    base.update(kw)
    return TrainConfig(**base).validate()


def temp_files(folder: Path):
    return [p.name for p in folder.rglob("*.tmp")] if folder.exists() else []


@pytest.fixture
def sd1():
    model = tiny_model("sd1")
    before = model_state(model)
    yield model
    assert state_differences(before, model_state(model)) == []


class OfflineHost(FakeHost):
    """The webui offline with live previews on "Approx NN": the first SDXL preview downloads vaeapprox-sdxl.pt."""

    def txt2img(self, prompt, negative_prompt, seed, steps, cfg_scale, width, height):
        if len(self.images) == 2:  # the first image of the preview at step 2
            self.images.append(("failed", seed, width, height))
            raise URLError("<urlopen error [Errno -3] Temporary failure in name resolution>")
        return super().txt2img(prompt, negative_prompt, seed, steps, cfg_scale, width, height)


def test_a_preview_failing_offline_at_step_2_of_4_is_a_warning_and_the_lora_is_saved(sd1, tmp_path):
    host = OfflineHost(model=sd1)
    runner = JobRunner(host)
    job = runner.start(tiny_config(tmp_path, sample_every_n_steps=1, sample_prompts=["demo, red circle"]))
    assert job.done.wait(300)
    status = runner.status()
    assert status["state"] == "completed", status["message"]
    final = Path(status["final_file"])
    assert final.is_file() and load_lora(final)[1]["ss_steps"] == "4"
    assert "Warning: the preview at step 2 failed (PreviewOffline: URLError" in status["message"]
    line = next(line for line in status["log"] if "warning: the preview at step 2 failed" in line)
    assert "URLError" in line and "Approx cheap" in line  # what to do about it, offline
    assert len(status["previews"]) == 3  # steps 1, 3 and 4
    assert temp_files(tmp_path / "out") == []


def stepping_host(tmp_path, model, at_step, action):
    """A WebuiLikeHost that runs `action(host)` when the progress bar reaches `at_step`."""

    class Host(WebuiLikeHost):
        def update(self, step, total, textinfo):
            super().update(step, total, textinfo)
            if step == at_step and not getattr(self, "acted", False):
                self.acted = True
                action(self)

    return Host(model=model)


def test_reload_ui_during_training_does_not_cancel_it(sd1, tmp_path):
    """Settings → Reload UI binds `shared.state.request_restart` when the UI is built (after the watch)."""
    host = stepping_host(tmp_path, sd1, 2, lambda h: reload_button())
    reload_button = host.state.request_restart  # what ui_settings.py binds as the button's fn
    runner = JobRunner(host)
    job = runner.start(tiny_config(tmp_path, steps=4))
    assert job.done.wait(300)
    assert job.state == "completed", job.message
    assert host.state.server_command == "restart"  # the webui still restarts its UI
    assert host.watch.reloads_survived == 1
    assert load_lora(Path(job.final_file))[1]["ss_steps"] == "4"


@pytest.mark.parametrize("press", ["interrupt", "stop_generating"])
def test_the_webui_interrupt_cancels_and_keeps_what_was_trained(sd1, tmp_path, press):
    host = stepping_host(tmp_path, sd1, 2, lambda h: getattr(h.state, press)())
    runner = JobRunner(host)
    job = runner.start(tiny_config(tmp_path, steps=6))
    assert job.done.wait(300)
    assert job.state == "cancelled" and "Interrupted from the webui" in job.message, job.message
    assert load_lora(Path(job.final_file))[1]["ss_steps"] == "2", job.message


def test_reload_without_a_training_keeps_the_webui_semantics():
    host = WebuiLikeHost(model=fake_sd1_model())
    host.state.request_restart()
    assert host.state.interrupted and host.interrupted()  # txt2img etc. must still stop for the reload


def test_installing_the_watch_twice_wraps_once():
    from lora_trainer.ui.lifecycle import RestartWatch

    host = WebuiLikeHost(model=fake_sd1_model())
    again = RestartWatch(host.state, training=lambda: True).install()  # the webui re-ran our script
    host.state.request_restart()
    assert again.reloads_survived == 1 and not host.state.interrupted
    assert host.state.server_command == "restart"


def test_shutdown_during_training_saves_the_partial_lora(sd1, tmp_path, capsys):
    said = []

    def exit_now(h):
        threading.Thread(target=lambda: said.append(runner.shutdown("signal 2", timeout=120))).start()

    host = stepping_host(tmp_path, sd1, 2, exit_now)
    runner = JobRunner(host)
    job = runner.start(tiny_config(tmp_path, steps=50))
    assert job.done.wait(300)
    assert job.state == "cancelled" and "shutting down" in job.message, job.message
    steps = int(load_lora(Path(job.final_file))[1]["ss_steps"])
    assert 2 <= steps < 50
    for _ in range(100):
        if said:
            break
        threading.Event().wait(0.05)
    assert said and str(job.final_file) in said[0]
    assert ("stop_work",) in host.calls  # a preview in progress would have been stopped
    assert "saving 'hero' first" in capsys.readouterr().out
    assert temp_files(tmp_path / "out") == []


def test_shutdown_that_cannot_save_in_time_leaves_no_temp_file(tmp_path):
    host = FakeHost(model=fake_sd1_model())

    class Stuck(FakeTrain):
        def __call__(self, model, config, progress, cancel, hooks):
            out = Path(config.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / ".hero.safetensors.0123456789ab.tmp").write_bytes(b"half a file")
            (out / ".hero-state.0123456789ab.tmp").mkdir()
            (out / ".other.safetensors.0123456789ab.tmp").write_bytes(b"not ours")
            self.started.set()
            self.gate.wait(30)  # a save that does not finish before the process ends
            return super().__call__(model, config, progress, cancel, hooks)

    fake = Stuck(host)
    fake.gate.clear()
    runner = JobRunner(host, train_fn=fake)
    config = tiny_config(tmp_path)
    job = runner.start(config)
    assert fake.started.wait(10)
    line = runner.shutdown("signal 2", timeout=0.3)
    assert "could not save" in line and "2 temporary file(s) removed" in line
    assert temp_files(tmp_path / "out") == [".other.safetensors.0123456789ab.tmp"]
    fake.gate.set()
    assert job.done.wait(10)


def test_the_signal_handler_saves_first_then_does_what_the_webui_would():
    calls = []
    handler = lifecycle.wrap_signal_handler(lambda sig, frame: calls.append(("webui", sig)),
                                            lambda reason: calls.append(("save", reason)))
    handler(2, None)
    assert calls == [("save", "signal 2"), ("webui", 2)]


def test_restart_from_the_extensions_tab_saves_before_os_exit():
    calls = []
    restart = types.SimpleNamespace(stop_program=lambda: calls.append("os._exit"))
    lifecycle.wrap_stop_program(restart, lambda reason: calls.append(f"save: {reason}"))
    lifecycle.wrap_stop_program(restart, lambda reason: calls.append("twice"))  # idempotent
    restart.stop_program()
    assert calls == ["save: restart/stop", "os._exit"]
