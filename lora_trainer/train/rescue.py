"""Never lose a run: after the first optimizer step, a failure (an exception in a hook or a callback, OOM, a
KeyboardInterrupt) still ends with the LoRA trained so far on disk, and a failing preview only costs a warning.

`rescue_save` writes `<name>.safetensors` when that name is free, else `<name>-step<N>.safetensors` (never over a
file this run did not write), atomically like every save. NaN is not rescued here: the loop keeps the last good
save instead (the weights themselves are broken then).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .memory import free_memory, is_out_of_memory
from .saving import final_file, save_session_lora, state_dir, step_file

logger = logging.getLogger("lora_trainer.train")

PREVIEW_FAILURES_TO_STOP = 3  # in a row: then previews are turned off for the rest of the run


def describe(exc: BaseException) -> str:
    """'URLError: <urlopen error ...>' — the cause in one line for the message and the log."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def rescue_name(output_dir: Path, name: str, step: int, written: List[Path]) -> Path:
    """The final name when it is free, else the step file; neither may replace a file this run did not write."""
    for candidate in (final_file(output_dir, name), step_file(output_dir, name, step)):
        if not candidate.exists() or candidate in written:
            return candidate
    k = 2
    while True:
        candidate = Path(output_dir) / f"{name}-step{step:08d}-{k}.safetensors"
        if not candidate.exists():
            return candidate
        k += 1


def rescue_save(s, hooks) -> Tuple[Optional[Path], str]:
    """Save the weights of the last completed step after a failure. Returns (file or None, a sentence for the
    message). Never raises: it runs inside the failure handler."""
    step = int(getattr(s, "steps_done", s.start_step) or 0)
    if s.network is None or step <= s.start_step:
        return None, "Nothing had been trained yet, so nothing was saved."
    dist = getattr(s, "dist", None)
    if dist is not None and not dist.is_main:
        return None, "Rank 0 saves what was trained so far."  # every rank holds the same weights
    if getattr(s, "saved_step", None) == step and s.files:
        return s.files[-1], f"The LoRA of step {step} had just been saved: {s.files[-1]}."
    try:
        if s.optimizer is not None:
            s.optimizer.zero_grad(set_to_none=True)  # after OOM: room for the CPU copies of the weights
        free_memory()
        if not all(torch.isfinite(p).all() for p in s.network.parameters()):
            last = f" The last good save is {s.files[-1]}." if s.files else ""
            return None, f"The LoRA weights are NaN/inf, so they were not saved.{last}"
        c = s.config
        path = rescue_name(s.output_dir, c.output_name, step, list(s.files))
        epoch = min(s.epochs, max(1, math.ceil(step / max(1, s.steps_per_epoch))))
        written = save_session_lora(s, path, step=step, epoch=epoch,
                                    model_identity=getattr(hooks, "model_identity", None),
                                    overwrite=path in s.files)
    except Exception as exc:  # noqa: BLE001 - report it; the original failure is what the message leads with
        logger.exception("saving the LoRA after a failure failed")
        return None, f"Saving what was trained so far failed too ({describe(exc)}); nothing was saved."
    s.files.append(written)
    s.saved_step = step
    note = f"Saved what was trained so far (step {step}/{s.total_steps}) to {written}."
    if c.save_state and s.optimizer is not None:
        try:
            from .state import save_state

            folder = save_state(state_dir(written), network_tensors=s.network.kohya_state_dict(),
                                optimizer=s.optimizer, scheduler=s.scheduler, scaler=s.scaler, step=step,
                                epoch=epoch, info={"seed": c.seed, "output_name": c.output_name,
                                                   "arch": s.adapter.arch})
            s.state_dirs.append(folder)
            note += f" The training state is in {folder.name} (set it as 'resume state' to continue)."
        except Exception as exc:  # noqa: BLE001
            logger.exception("saving the training state after a failure failed")
            note += f" The training state could not be saved ({describe(exc)})."
    if hooks is not None and hooks.on_saved is not None:
        try:
            hooks.on_saved(written)
        except Exception:  # noqa: BLE001 - the file is on disk; the result lists it
            logger.exception("on_saved hook failed")
    return written, note


class PreviewGuard:
    """Runs the preview hook so that its failure is a warning: three failures in a row turn previews off."""

    def __init__(self, log):
        self.log = log
        self.failures_in_a_row = 0
        self.off = False
        self.warnings: List[str] = []

    def run(self, fn, step: int) -> None:
        if self.off:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a preview must never end the training
            if is_out_of_memory(exc):
                free_memory()
            logger.warning("preview at step %d failed", step, exc_info=True)
            self.failures_in_a_row += 1
            self.warnings.append(f"the preview at step {step} failed ({describe(exc)})")
            self.log(f"warning: the preview at step {step} failed: {describe(exc)}; training goes on "
                     "(the console has the traceback)")
            if self.failures_in_a_row >= PREVIEW_FAILURES_TO_STOP:
                self.off = True
                self.log(f"previews are turned off for the rest of this run after {self.failures_in_a_row} "
                         "failures in a row")
            return
        self.failures_in_a_row = 0

    def summary(self) -> str:
        """' Warning: ...' for the result message, or ''."""
        if not self.warnings:
            return ""
        first = self.warnings[0]
        more = f" and {len(self.warnings) - 1} more" if len(self.warnings) > 1 else ""
        off = " Previews were turned off after 3 failures in a row." if self.off else ""
        return f" Warning: {first}{more}; see the log.{off}"
