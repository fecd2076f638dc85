"""A webui stand-in for the UI/job/API tests: records what the job asked of the webui."""

from __future__ import annotations

import contextlib
import threading
import types

from lora_trainer.ui.host import Host


class FakeHost(Host):
    def __init__(self, model=None, title="tiny.safetensors [0123456789]", lora_dir="", credentials=None):
        self._model = model
        self._title = title
        self._lora_dir = lora_dir
        self._credentials = credentials
        self.lock = threading.Lock()
        self.calls = []  # ("begin", task) / ("end", task) / ("update", step, total, text) / ...
        self.lock_held_during_train = None
        self.interrupt = False
        self.settings = {}
        self.images = []  # (prompt, seed, width, height) of each txt2img call

    def model(self):
        return self._model

    def model_title(self):
        return self._title if self._model is not None else ""

    def gpu_lock(self):
        return self.lock

    def task_queued(self, task_id):
        self.calls.append(("queued", task_id))

    def begin(self, task_id, job):
        self.calls.append(("begin", task_id))

    def update(self, step, total, textinfo):
        self.calls.append(("update", step, total, textinfo))

    def end(self, task_id):
        self.calls.append(("end", task_id))

    def interrupted(self):
        return self.interrupt

    def stop_work(self):
        self.calls.append(("stop_work",))

    def release_webui_loras(self, model):
        self.calls.append(("release_loras",))

    def after_training(self, model):
        self.calls.append(("after_training",))

    def refresh_loras(self):
        self.calls.append(("refresh_loras",))

    def txt2img(self, prompt, negative_prompt, seed, steps, cfg_scale, width, height):
        from PIL import Image

        self.images.append((prompt, seed, width, height))
        return Image.new("RGB", (width, height), (len(self.images) * 40 % 255, 0, 0))

    def setting(self, key, default=None):
        return self.settings.get(key, default)

    def lora_dir(self):
        return self._lora_dir

    def api_credentials(self):
        return self._credentials

    @contextlib.contextmanager
    def captioners(self, blip, deepbooru):
        pairs = []
        if blip:
            pairs.append(("BLIP", lambda img: "a photo of a thing"))
        if deepbooru:
            pairs.append(("DeepBooru", lambda img: "solo, red"))
        self.calls.append(("captioners_loaded", blip, deepbooru))
        yield pairs
        self.calls.append(("captioners_unloaded",))


def fake_sd1_model():
    """Passes detect_arch as SD1 without building a network (for tests that never train)."""
    import torch

    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.diffusion_model = torch.nn.Module()
    model.model.diffusion_model.in_channels = 4
    model.cond_stage_model = types.SimpleNamespace(transformer=object())
    return model


def make_dataset(root, images=2, size=64):
    """root/5_thing/NN.png + NN.txt"""
    from PIL import Image

    folder = root / "5_thing"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", (size, size), (i * 60 % 255, 100, 200)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"thing, picture {i}\n", encoding="utf-8")
    return root


class WebuiLikeState:
    """The parts of the webui's `modules.shared_state.State` (1.10.1, same in Forge) that stop a job: Interrupt
    and Reload UI both set `interrupted` — request_restart() calls interrupt() and then sets the server command —
    and begin() clears the flags."""

    def __init__(self):
        self.interrupted = False
        self.stopping_generation = False
        self.server_command = None

    def interrupt(self):
        self.interrupted = True

    def stop_generating(self):
        self.stopping_generation = True

    def request_restart(self):
        self.interrupt()
        self.server_command = "restart"

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.stopping_generation = False


class WebuiLikeHost(FakeHost):
    """FakeHost whose interrupt comes from a WebuiLikeState watched like WebuiHost watches shared.state."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        from lora_trainer.ui.lifecycle import RestartWatch

        self.state = WebuiLikeState()
        self.task = ""
        self.watch = RestartWatch(self.state, training=lambda: bool(self.task)).install()

    def begin(self, task_id, job):
        self.state.begin(job)
        self.task = task_id
        super().begin(task_id, job)

    def end(self, task_id):
        self.task = ""
        super().end(task_id)

    def interrupted(self):
        return self.watch.interrupted()
