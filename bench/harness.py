"""Measuring helpers for the benchmarks: step timing (median after warm-up) and peak memory in one process.

On CUDA, peak memory is `torch.cuda.max_memory_allocated`. On CPU, a sampling thread reads the resident set size
from /proc every few milliseconds, so peaks of one measured window can be told apart within a single process
(`ru_maxrss` only ever grows).
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_PAGE = 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class MemoryWindow:
    device: str
    baseline: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    step_peak: int = 0  # peak since reset_peak(): the training steps alone, after one-off setup (latent caching)
    step_start: int = 0  # the level when the steps began

    @property
    def beyond_baseline(self) -> int:
        return max(0, (self.step_peak or self.peak) - self.baseline)

    @property
    def during_steps(self) -> int:
        """What the steps themselves add (activations, gradients, optimizer state); on CPU the RSS never shrinks,
        so heap retained from earlier setup would otherwise count."""
        return max(0, (self.step_peak or self.peak) - (self.step_start or self.baseline))

    def reset_peak(self) -> None:
        """Start tracking `step_peak` now (the overall `peak` is kept)."""
        if self.device.startswith("cuda"):
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        self.step_peak = rss_bytes() if not self.device.startswith("cuda") else torch.cuda.memory_allocated()
        self.step_start = self.step_peak


@contextmanager
def measure_memory(device: str):
    """Peak memory while the block runs; `baseline` is the level when it started (the loaded model)."""
    gc.collect()
    win = MemoryWindow(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        win.baseline = torch.cuda.memory_allocated()
        try:
            yield win
        finally:
            torch.cuda.synchronize()
            if win.step_peak:
                win.step_peak = max(win.step_peak, torch.cuda.max_memory_allocated())
            win.peak = max(win.peak, torch.cuda.max_memory_allocated(), win.step_peak)
        return
    win.baseline = win.peak = rss_bytes()

    def sample():
        while not win._stop.wait(0.005):
            now = rss_bytes()
            win.peak = max(win.peak, now)
            if win.step_peak:
                win.step_peak = max(win.step_peak, now)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield win
    finally:
        win._stop.set()
        thread.join()
        win.peak = max(win.peak, rss_bytes())


def time_steps(step_fn, warmup: int, steps: int, device: str, window: MemoryWindow | None = None) -> list[float]:
    """Run `step_fn()` warmup+steps times; return the timed durations (seconds)."""
    if window is not None:
        window.reset_peak()
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step_fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def base_weight_index(module: torch.nn.Module, min_numel: int = 4096) -> tuple[set, set]:
    """Storage pointers and shapes of a model's (large) parameters and buffers, to recognise copies of them."""
    ptrs, shapes = set(), set()
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type != "meta" and t.numel() >= min_numel:
            ptrs.add(t.untyped_storage().data_ptr())
            shapes.add(tuple(t.shape))
    return ptrs, shapes


def duplicated_base_bytes(base_ptrs: set, base_shapes: set, min_numel: int = 4096) -> int:
    """Bytes held by live tensors that have the shape of a base weight but not its storage: copies of the model.

    A LoRA that trains the model's own modules in place holds none; a converted second copy of the UNet holds all.
    """
    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta" or obj.numel() < min_numel:
                continue
            ptr = obj.untyped_storage().data_ptr()
        except Exception:  # noqa: BLE001 - odd tensor subclasses
            continue
        if ptr in base_ptrs or ptr in seen or tuple(obj.shape) not in base_shapes:
            continue
        seen.add(ptr)
        total += obj.untyped_storage().nbytes()
    return total
