"""One training job's state as the tab and the API read it (progress, loss history, log, files, previews),
and the one-line text for the webui's progress bar. The runner that drives it is job.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any, Dict, List, Optional

from lora_trainer.config import TrainConfig

LOG_LINES = 400
ACTIVE_STATES = ("queued", "running")


class TrainingJob:
    """One run. Mutated by its worker thread (and `cancel_requested` by JobRunner.cancel); read via `snapshot()`."""

    def __init__(self, config: TrainConfig, task_id: str, model_title: str, arch: str):
        self.id = uuid.uuid4().hex[:12]
        self.task_id = task_id
        self.config = config
        self.model_title = model_title
        self.arch = arch
        self.state = "queued"  # queued | running | completed | cancelled | nan | oom | error
        self.message = "Queued"  # "waiting for txt2img/img2img" only once the webui's queue is found busy
        self.phase = ""
        self.progress: Dict[str, Any] = {}
        self.loss_history: List[tuple] = []  # (step, loss, avg_loss)
        self.log: deque = deque(maxlen=LOG_LINES)
        self.files: List[str] = []
        self.final_file = ""
        self.previews: List[str] = []
        self.started_at = time.time()
        self.finished_at: Optional[float] = None
        self.cancel_requested = False
        self.stop_reason = ""  # why it was asked to stop: "cancel" | "interrupt" | "shutdown"
        self.done = threading.Event()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    # ---- called from the worker thread / engine callbacks ----------------------------------------------------
    def add_log(self, line: str) -> None:
        with self._lock:
            self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def on_progress(self, progress) -> None:
        data = {k: getattr(progress, k, None) for k in (
            "phase", "step", "total_steps", "epoch", "total_epochs", "loss", "avg_loss", "lr", "it_per_s", "eta_s",
            "message")}
        with self._lock:
            # the final "done" report carries no loss/lr: keep the last known values for the status line
            self.progress = {**self.progress, **{k: v for k, v in data.items() if v is not None}}
            self.phase = data["phase"] or self.phase
            if data["message"]:
                self.message = data["message"]
            step, loss = data["step"], data["loss"]
            if data["phase"] in (None, "training") and loss is not None and step is not None:
                if not self.loss_history or self.loss_history[-1][0] != step:
                    self.loss_history.append((int(step), float(loss), float(data["avg_loss"] or loss)))

    def set_running(self) -> None:
        with self._lock:
            self.state, self.message = "running", "Starting"

    def set_message(self, message: str) -> None:
        with self._lock:
            self.message = message

    def on_saved(self, path: str) -> None:
        with self._lock:
            self.files.append(str(path))
        self.add_log(f"saved {path}")

    def add_preview(self, path: str) -> None:
        with self._lock:
            self.previews.append(str(path))

    def finish(self, state: str, message: str, final_file: str = "") -> None:
        with self._lock:
            self.state, self.message = state, message or f"The training ended ({state})."
            if final_file:
                self.final_file = str(final_file)
                if self.final_file not in self.files:
                    self.files.append(self.final_file)
            self.finished_at = time.time()
        self.add_log(f"{state}: {message}")

    # ---- read side -------------------------------------------------------------------------------------------
    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            p = dict(self.progress)
            return {
                "job_id": self.id, "task_id": self.task_id, "state": self.state, "message": self.message,
                "phase": self.phase, "step": p.get("step") or 0, "total_steps": p.get("total_steps") or 0,
                "epoch": p.get("epoch") or 0, "total_epochs": p.get("total_epochs") or 0, "loss": p.get("loss"),
                "avg_loss": p.get("avg_loss"), "lr": p.get("lr"), "it_per_s": p.get("it_per_s"),
                "eta_s": p.get("eta_s"), "files": list(self.files), "final_file": self.final_file,
                "previews": list(self.previews), "model": self.model_title, "arch": self.arch,
                "output_name": self.config.output_name, "trigger_word": self.config.trigger_word,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "loss_history": [list(r) for r in self.loss_history], "log": list(self.log),
            }


def progress_text(job: TrainingJob) -> str:
    """One line for the webui progress bar (it hides text with a newline)."""
    p = job.progress
    step, total = p.get("step") or 0, p.get("total_steps") or 0
    parts = [f"{job.config.output_name}:"]
    if job.phase and job.phase != "training":
        parts.append(str(p.get("message") or job.phase))
    if total:
        parts.append(f"step {step}/{total}")
    if p.get("total_epochs"):
        parts.append(f"epoch {p.get('epoch') or 0}/{p['total_epochs']}")
    if p.get("avg_loss") is not None:
        parts.append(f"loss {p['avg_loss']:.4f}")
    return " ".join(parts).replace("\n", " ")
