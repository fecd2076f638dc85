"""A training outlives page reloads and Reload UI, and the webui's exit saves it first.

Host-neutral pieces the webui adapters (A1111, Forge: both have the same `shared.state` and `modules.restart`)
plug their objects into:
- `RestartWatch`: the webui's *Reload UI* calls `state.request_restart()`, which calls `state.interrupt()` — the
  very flag the Interrupt button sets. The watch wraps `request_restart` on the state instance, so a restart is
  known *before* its interrupt lands, and the reload's interrupt is taken back while a training holds the GPU.
- `install_shutdown_hooks`: Ctrl+C (the webui's SIGINT handler calls `os._exit(0)`), SIGTERM, the Extensions tab's
  restart / `/sdapi/v1/server-kill` (`modules.restart.stop_program` → `os._exit`) and a normal interpreter exit
  (`atexit`) first call `on_shutdown`, which stops the job (its cancel path saves the LoRA) and waits a few seconds.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import Callable, Optional

logger = logging.getLogger(__name__)
_MARK = "_train_lora_wrapped"


class RestartWatch:
    def __init__(self, state, training: Callable[[], bool]):
        self.state = state
        self.training = training  # True while our job holds the GPU (then the reload's interrupt is ours to undo)
        self.reloads_survived = 0
        self._lock = threading.Lock()

    def install(self) -> RestartWatch:
        current = self.state.request_restart
        earlier = getattr(current, _MARK, None)
        original = earlier.original if earlier is not None else current  # a second install replaces the first

        def request_restart(*args, **kwargs):
            with self._lock:
                result = original(*args, **kwargs)
                if self.training():
                    self.state.interrupted = False  # Reload UI is not a request to stop the training
                    self.reloads_survived += 1
                    logger.info("Train LoRA: the UI reloads; the training goes on")
                return result

        setattr(request_restart, _MARK, self)
        self.original = original
        self.state.request_restart = request_restart  # an instance attribute: the class stays untouched
        return self

    def interrupted(self) -> bool:
        """The Interrupt button or /sdapi/v1/interrupt (state.interrupt / stop_generating); never a reload."""
        with self._lock:  # a reload in progress has set the flag and not yet taken it back
            return bool(getattr(self.state, "interrupted", False) or getattr(self.state, "stopping_generation", False))


# ---- shutdown --------------------------------------------------------------------------------------------------
class _Hooks:
    installed = False
    on_shutdown: Optional[Callable[[str], None]] = None
    running = False


def _once(on_shutdown: Optional[Callable[[str], None]], reason: str) -> None:
    """Run `on_shutdown` unless it is already running (a second Ctrl+C while saving goes straight to the exit)."""
    if _Hooks.running or on_shutdown is None:
        return
    _Hooks.running = True
    try:
        on_shutdown(reason)
    except Exception:  # noqa: BLE001 - the process is exiting: never block that
        logger.exception("Train LoRA: saving at shutdown failed")
    finally:
        _Hooks.running = False


def _current(reason: str) -> None:
    """The newest runner's shutdown (the hooks are installed once, the runner may be replaced)."""
    if _Hooks.on_shutdown is not None:
        _Hooks.on_shutdown(reason)


def wrap_signal_handler(previous, on_shutdown: Callable[[str], None]):
    """A handler that runs `on_shutdown` first and then what `previous` would have done."""

    def handler(sig, frame):
        _once(on_shutdown, f"signal {sig}")
        if callable(previous):
            return previous(sig, frame)
        if previous == signal.SIG_IGN:
            return None
        signal.signal(sig, signal.SIG_DFL)  # the default action (terminate), as if we had not been here
        os.kill(os.getpid(), sig)
        return None

    setattr(handler, _MARK, True)
    return handler


def wrap_stop_program(module, on_shutdown: Callable[[str], None]) -> None:
    """`modules.restart.stop_program` ends the process with os._exit (no atexit): save first."""
    current = getattr(module, "stop_program", None)
    if current is None or hasattr(current, _MARK):
        return

    def stop_program(*args, **kwargs):
        _once(on_shutdown, "restart/stop")
        return current(*args, **kwargs)

    setattr(stop_program, _MARK, True)
    module.stop_program = stop_program


def install_shutdown_hooks(on_shutdown: Callable[[str], None], restart_module=None) -> None:
    """Idempotent (the webui re-runs extension scripts on Reload UI). Signals only from the main thread."""
    _Hooks.on_shutdown = on_shutdown  # the newest runner wins
    if restart_module is not None:
        wrap_stop_program(restart_module, _current)
    if _Hooks.installed:
        return
    _Hooks.installed = True
    atexit.register(_once, _current, "exit")
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(signum)
            if not hasattr(previous, _MARK):
                signal.signal(signum, wrap_signal_handler(previous, _current))
        except (ValueError, OSError):  # not available here
            pass
