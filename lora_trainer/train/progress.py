"""What the trainer tells its caller while it runs, and how the caller asks it to stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

PHASES = ("preparing", "caching", "training", "saving", "done")


@dataclass
class Progress:
    phase: str  # one of PHASES
    step: int = 0  # optimizer steps done
    total_steps: int = 0
    epoch: int = 0  # 1-based epoch being trained
    total_epochs: int = 0
    loss: Optional[float] = None  # last step's loss
    avg_loss: Optional[float] = None  # moving average over the last epoch's worth of steps (kohya's loss/average)
    lr: Optional[float] = None  # UNet (first param group) learning rate
    it_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    message: str = ""


class CancelToken:
    """Cooperative cancel: the loop checks `cancelled` between steps. `extra_check` (e.g. the webui's
    `lambda: shared.state.interrupted`) is consulted too."""

    def __init__(self, extra_check: Optional[Callable[[], bool]] = None):
        self._event = threading.Event()
        self._extra_check = extra_check

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self._extra_check is not None and self._extra_check():
            self._event.set()
            return True
        return False


class Speedometer:
    """it/s and ETA over the optimizer steps of this run (the first step, which warms caches up, is excluded)."""

    def __init__(self):
        self._start: Optional[float] = None
        self._start_step = 0
        self.it_per_s: Optional[float] = None

    def update(self, step: int, total: int) -> Optional[float]:
        now = time.perf_counter()
        if self._start is None:
            self._start, self._start_step = now, step
            return None
        elapsed = now - self._start
        if elapsed > 0 and step > self._start_step:
            self.it_per_s = (step - self._start_step) / elapsed
            return (total - step) / self.it_per_s
        return None
