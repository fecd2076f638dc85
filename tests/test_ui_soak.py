"""Soak test of the job runner against a fake webui (issue 12): 200 start/cancel/status cycles with random timing,
status polled from 4 threads, random exceptions injected at every phase (the host's calls, the GPU lock, dataset
set-up, the training step, previews, the file system under every save). Afterwards: no thread left, no lock
held, no temporary file, the model exactly as at the start, every finished job with a file or a message.

Every 4th cycle runs the real engine on a micro SD1 model (real ldm classes, a two-level UNet); the others run a
scripted trainer that makes the same hook calls with real saves, so 200 cycles fit in well under a minute on two
cores. Seeded: the injected failures are the same every run (thread timing still varies).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from lora_trainer.config import TrainConfig
from lora_trainer.train import Progress, TrainResult
from lora_trainer.train.verify import model_state, state_differences
from lora_trainer.ui.job import JobRunner
from lora_trainer.ui.preflight import JobRefused

sys.path.insert(0, str(Path(__file__).parent))
from ui_fakes import WebuiLikeHost  # noqa: E402

CYCLES = 200
REAL_EVERY = 4
FINAL_STATES = {"completed", "cancelled", "nan", "oom", "error"}


class Injected(RuntimeError):
    """A failure the soak test put there."""


class Chaos:
    def __init__(self, seed: int, rate: float):
        self.rng = random.Random(seed)
        self.rate = rate
        self.lock = threading.Lock()
        self.fired: dict = {}
        self.on = True

    def maybe(self, where: str) -> None:
        with self.lock:
            hit = self.on and self.rng.random() < self.rate
            if hit:
                self.fired[where] = self.fired.get(where, 0) + 1
        if hit:
            if where == "train step" and self.rng.random() < 0.3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            raise Injected(f"injected failure in {where}")


class ChaosOS(types.SimpleNamespace):
    """`os` for one module, whose rename/link fail now and then: a save that breaks after its temp file exists."""

    def __init__(self, chaos: Chaos, where: str):
        super().__init__()
        self._chaos, self._where = chaos, where

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        self._chaos.maybe(self._where)
        return os.replace(src, dst)

    def link(self, src, dst):
        self._chaos.maybe(self._where)
        return os.link(src, dst)


def chaos_host(chaos: Chaos, model):
    class Host(WebuiLikeHost):
        pass

    def wrap(name):
        method = getattr(WebuiLikeHost, name)

        def call(self, *args, **kwargs):
            if name in ("begin", "end"):
                self.calls.append((f"try-{name}", args[0]))  # also when the call is made to fail
            chaos.maybe(f"host.{name}")
            return method(self, *args, **kwargs)

        return call

    for name in ("model", "begin", "update", "release_webui_loras", "after_training", "refresh_loras", "end",
                 "txt2img", "gpu_lock", "show_preview", "task_queued"):
        setattr(Host, name, wrap(name))
    return Host(model=model)


def micro_sd1():
    """A two-level SD1 UNet (real ldm classes): the engine's real set-up and steps, ~5x cheaper than tiny."""
    from omegaconf import OmegaConf

    from lora_trainer.testing.randomize import randomize_
    from lora_trainer.testing.tiny_sd import tiny_sd_config
    from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from ldm.util import instantiate_from_config

    config = tiny_sd_config(False, False)
    config["model"]["params"]["unet_config"]["params"].update(
        model_channels=32, channel_mult=[1, 1], num_res_blocks=1, attention_resolutions=[1], num_heads=2)
    torch.manual_seed(0)
    model = instantiate_from_config(OmegaConf.create(config).model)
    randomize_(model, 0)
    return model.eval()


class ScriptedTrain:
    """The engine's protocol (progress, cancel checks, previews, saves through save_lora, a TrainResult) without
    the math, and free to raise: the runner must cope with a train function that fails anywhere."""

    def __init__(self, chaos: Chaos):
        self.chaos = chaos

    def __call__(self, model, config, progress, cancel, hooks):
        from lora_trainer.lora_file import save_lora

        out = Path(config.output_dir)
        tensors = {"lora_unet_x.lora_down.weight": torch.ones(2, 4), "lora_unet_x.lora_up.weight": torch.ones(4, 2),
                   "lora_unet_x.alpha": torch.tensor(2.0)}
        files = []

        def save(name):
            path = save_lora(out / f"{name}.safetensors", tensors, {"ss_output_name": name}, overwrite=True)
            files.append(path)
            hooks.on_saved(path)
            return path

        total = config.max_train_steps
        network = types.SimpleNamespace(multiplier=1.0)
        for step in range(1, total + 1):
            if cancel.cancelled:
                path = save(config.output_name) if step > 1 else None
                return TrainResult("cancelled", f"Cancelled at step {step - 1}.", files=files, final_file=path)
            self.chaos.maybe("train step")
            time.sleep(0.002)
            progress(Progress("training", step=step, total_steps=total, loss=1.0 / step, avg_loss=1.0 / step))
            if config.sample_every_n_steps and step % config.sample_every_n_steps == 0:
                hooks.on_sample(step, 1, network, None)
            if config.save_every_n_steps and step % config.save_every_n_steps == 0 and step < total:
                save(f"{config.output_name}-step{step:08d}")
        final = save(config.output_name)
        return TrainResult("completed", f"Done: {total} steps. Saved {final}.", files=files, final_file=final)


def chaotic(chaos: Chaos, method, where: str):
    def call(*args, **kwargs):
        chaos.maybe(where)
        return method(*args, **kwargs)

    return call


@pytest.fixture
def chaos_world(tmp_path, monkeypatch):
    import lora_trainer.lora_file.save as lora_save
    import lora_trainer.train.loop as loop
    import lora_trainer.train.session as session
    import lora_trainer.ui.previews as previews
    from lora_trainer.dataset import LatentCache
    from lora_trainer.train import train as real_train
    from lora_trainer.ui.job import TrainingJob

    chaos = Chaos(seed=12, rate=0.03)
    monkeypatch.setattr(lora_save, "os", ChaosOS(chaos, "LoRA save"))
    monkeypatch.setattr(previews, "os", ChaosOS(chaos, "preview save"))
    real_loss, real_optimizer = loop.diffusion_loss, session.Session._build_optimizer

    def loss(*args, **kwargs):
        chaos.maybe("train step")
        return real_loss(*args, **kwargs)

    def build_optimizer(self):
        chaos.maybe("set-up")
        return real_optimizer(self)

    monkeypatch.setattr(loop, "diffusion_loss", loss)
    monkeypatch.setattr(session.Session, "_build_optimizer", build_optimizer)
    for owner, name, where in ((session.Session, "_scan_dataset", "dataset scan"),
                               (LatentCache, "prepare", "latent caching"),
                               (TrainingJob, "on_saved", "on_saved hook")):
        monkeypatch.setattr(owner, name, chaotic(chaos, getattr(owner, name), where))
    scripted = ScriptedTrain(chaos)

    def train_fn(model, config, progress, cancel, hooks):
        if config.training_comment == "real":
            return real_train(model, config, progress=progress, cancel=cancel, hooks=hooks)
        return scripted(model, config, progress, cancel, hooks)

    return chaos, train_fn


def poll(runner, stop: threading.Event, seen: list) -> None:
    from lora_trainer.ui import panels

    while not stop.is_set():
        status = runner.status()
        panels.status_markdown(status)
        runner.busy_reason()
        seen.append(status["state"])
        time.sleep(0.003)


def test_soak_200_cycles_with_random_timing_and_failures(tmp_path, chaos_world):
    from lora_trainer.demo import make_demo_dataset

    chaos, train_fn = chaos_world
    rng = random.Random(7)
    torch.set_num_threads(1)
    model = micro_sd1()
    before = model_state(model)
    threads_before = set(threading.enumerate())
    host = chaos_host(chaos, model)
    runner = JobRunner(host, train_fn=train_fn)
    data = make_demo_dataset(tmp_path / "data", count=2)
    bad = tmp_path / "unreadable" / "5_x"
    bad.mkdir(parents=True)
    (bad / "a.png").write_bytes(b"not an image")
    out = tmp_path / "out"

    stop, seen = threading.Event(), []
    pollers = [threading.Thread(target=poll, args=(runner, stop, seen), name=f"poll-{i}") for i in range(4)]
    for t in pollers:
        t.start()
    jobs, refused = [], {400: 0, 409: 0}
    started = time.monotonic()
    try:
        for cycle in range(CYCLES):
            real = cycle % REAL_EVERY == 0
            unreadable = rng.random() < 0.04
            config = TrainConfig(
                train_dir=str(bad.parent if unreadable else data), output_dir=str(out),
                output_name=f"soak{cycle:03d}", resolution=64, enable_bucket=False, network_dim=2, network_alpha=2,
                max_train_steps=rng.randint(1, 3) if real else rng.randint(1, 8), mixed_precision="fp32",
                gradient_checkpointing=False, cache_latents=rng.random() < 0.5, save_precision="fp16",
                sample_every_n_steps=rng.choice([0, 1, 2]), sample_prompts=["demo"], sample_steps=1,
                save_every_n_steps=rng.choice([0, 1, 2]), save_state=real and rng.random() < 0.2,
                training_comment="real" if real else "").validate()
            try:
                job = runner.start(config)
            except JobRefused as exc:
                assert unreadable or "injected" in exc.message, exc.message
                refused[400 if unreadable else 409] += 1
                continue
            except Injected:  # host.model() / task_queued failed inside start: nothing was started
                continue
            jobs.append((job, real))
            time.sleep(rng.random() * 0.01)
            action = rng.random()
            if action < 0.3:
                runner.cancel()
            elif action < 0.4:
                host.state.request_restart()  # Reload UI: must not stop it
            elif action < 0.45:
                host.state.interrupt()  # the webui's Interrupt
            if rng.random() < 0.2:
                config.output_name += "-again"
                try:
                    other = runner.start(config)
                except JobRefused as exc:  # one job at a time (or a start check failed by injection)
                    assert exc.status_code == 409, exc.message
                except Injected:
                    pass
                else:  # only when the first had already finished
                    assert job.done.is_set()
                    jobs.append((other, real))
                    job = other
            assert job.done.wait(60), f"cycle {cycle}: the job did not finish: {job.snapshot()['log'][-5:]}"
    finally:
        stop.set()
        for t in pollers:
            t.join(10)
    elapsed = time.monotonic() - started

    # no thread left, no lock held
    for _ in range(200):
        if not [t for t in threading.enumerate() if t not in threads_before]:
            break
        time.sleep(0.01)
    assert [t.name for t in threading.enumerate() if t not in threads_before] == []
    assert not host.lock.locked()
    assert runner._lock.acquire(blocking=False)
    runner._lock.release()
    for job, _ in jobs:
        assert job._lock.acquire(blocking=False)
        job._lock.release()
    assert host.task == ""  # the webui's progress state was released every time

    # no temporary file; the model as at the start
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []
    assert state_differences(before, model_state(model)) == []

    # every finished job with a file or a message
    states = {}
    for job, real in jobs:
        assert job.state in FINAL_STATES and job.done.is_set() and job.message.strip(), job.snapshot()
        states[job.state] = states.get(job.state, 0) + 1
        assert all(Path(f).is_file() for f in job.files), job.files
        if job.state == "completed":
            assert job.final_file and Path(job.final_file).is_file()
        trained = job.progress.get("step") or 0
        if real and trained and job.state in ("error", "oom", "cancelled") and not job.files:
            assert "nothing was saved" in job.message.lower() or "not saved" in job.message, job.message
        begins = sum(1 for c in host.calls if c == ("try-begin", job.task_id))
        ends = sum(1 for c in host.calls if c == ("try-end", job.task_id))
        assert begins <= ends <= 1, (job.task_id, begins, ends)  # end() after every begin(), even a failed one

    assert len(jobs) > CYCLES * 0.8 and states.get("completed", 0) > 20 and states.get("error", 0) > 5, states
    assert len(chaos.fired) >= 10, chaos.fired  # failures really landed in many phases
    assert "running" in seen and "completed" in seen
    print(f"soak: {len(jobs)} jobs {states}, refused {refused}, injected {chaos.fired}, {elapsed:.1f} s")
