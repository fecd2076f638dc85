"""The single background training job: checks before starting, the thread that holds the GPU lock and runs
`lora_trainer.train.train`, and the state the tab and the API read (progress, loss history, log, files).

Nothing here imports the webui: everything webui-facing goes through a `Host` (see host.py).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import traceback
import uuid
from typing import Any, Callable, Dict, List, Optional

from lora_trainer.config import TrainConfig
from lora_trainer.ui.host import Host
from lora_trainer.ui.preflight import JobRefused, preflight
from lora_trainer.ui.training_job import ACTIVE_STATES, LOG_LINES, TrainingJob, progress_text  # noqa: F401

WAITING_FOR_WEBUI = "Waiting for txt2img/img2img (another webui job holds the GPU) to finish"
SHUTDOWN_WAIT_S = 15.0  # how long the webui's exit waits for the job to save
STOP_REASONS = {"interrupt": "Interrupted from the webui (Interrupt button or /sdapi/v1/interrupt).",
                "shutdown": "The webui was shutting down."}


def _checkpoint_identity(host: Host, job) -> dict:
    try:
        return dict(host.checkpoint_identity())
    except Exception as exc:  # metadata is never worth a failed run
        job.add_log(f"could not read the checkpoint's name/hash for the metadata: {exc}")
        return {}


def _default_train():
    from lora_trainer.train import train  # the engine; imported late so the UI loads even without it

    return train


class JobRunner:
    """Runs at most one job at a time. `train_fn` and `preview_factory` are injectable for tests."""

    def __init__(self, host: Host, train_fn: Optional[Callable] = None,
                 preview_factory: Optional[Callable] = None):
        self.host = host
        self._train_fn = train_fn
        self._preview_factory = preview_factory
        self._lock = threading.Lock()
        self._job: Optional[TrainingJob] = None
        self._exclusive: Optional[str] = None  # e.g. "Captioning" while it runs

    # ---- queries ---------------------------------------------------------------------------------------------
    @property
    def job(self) -> Optional[TrainingJob]:
        return self._job

    def busy_reason(self) -> str:
        if self._exclusive:
            return f"{self._exclusive} is running; wait for it to finish."
        job = self._job
        if job is not None and job.active:
            where = f" (step {job.progress.get('step') or 0}/{job.progress.get('total_steps') or '?'})" \
                if job.state == "running" else \
                (" (waiting for txt2img/img2img to finish)" if job.message == WAITING_FOR_WEBUI else " (queued)")
            return f"A training job is already running: '{job.config.output_name}'{where}. Cancel it or wait."
        return ""

    def status(self) -> Dict[str, Any]:
        job = self._job
        if job is None:
            return {"state": "idle", "message": "No training job has run since the webui started."}
        return job.snapshot()

    # ---- commands --------------------------------------------------------------------------------------------
    def start(self, config: TrainConfig, task_id: str = "") -> TrainingJob:
        """Check everything that can be checked quickly, then start the worker. Raises JobRefused."""
        with self._lock:
            reason = self.busy_reason()
            if reason:
                raise JobRefused(reason, status_code=409)
            checked = preflight(self.host, config)
            job = TrainingJob(config, task_id or f"task(train_lora_{uuid.uuid4().hex[:10]})",
                              checked.model_title, checked.arch)
            job.add_log(f"queued '{config.output_name}' on {checked.model_title or 'the loaded model'} "
                        f"({checked.arch}); output {checked.output_file}")
            try:
                self.host.task_queued(job.task_id)
            except Exception as exc:  # only the webui's "queued" display is missing; the job still runs
                job.add_log(f"could not show the job as queued in the webui: {exc}")
            self._job = job
            try:
                threading.Thread(target=self._run, args=(job,), name="train-lora", daemon=True).start()
            except RuntimeError as exc:  # cannot start a thread: never leave a job that looks queued forever
                job.finish("error", f"could not start the training thread: {exc}")
                job.done.set()
                raise JobRefused(f"Could not start the training: {exc}", status_code=503) from exc
            return job

    def cancel(self, reason: str = "cancel") -> bool:
        job = self._job
        if job is None or not job.active:
            return False
        job.stop_reason = job.stop_reason or reason
        job.cancel_requested = True
        job.add_log("cancel requested; stopping after the current step (what was trained so far is saved)")
        return True

    def shutdown(self, reason: str = "exit", timeout: float = SHUTDOWN_WAIT_S) -> str:
        """The webui is exiting: stop the job (its cancel saves the LoRA trained so far) and wait up to `timeout`
        seconds. If it cannot finish in time, remove its temporary files so no partial file is left."""
        job = self._job
        if job is None or not job.active:
            return ""
        print(f"Train LoRA: the webui is exiting ({reason}); saving '{job.config.output_name}' first "
              f"(up to {timeout:g} s)...", flush=True)
        self.cancel("shutdown")
        try:
            self.host.stop_work()  # a preview in progress ends now instead of after all its sampling steps
        except Exception as exc:  # noqa: BLE001
            job.add_log(f"could not stop the webui's current work: {exc}")
        if job.done.wait(timeout):
            line = f"Train LoRA: {job.message}"
        else:
            removed = remove_temp_files(job.config)
            job.add_log(f"the webui exited before the job could save; removed {len(removed)} temporary file(s)")
            line = (f"Train LoRA: could not save within {timeout:g} s; nothing partial is left "
                    f"({len(removed)} temporary file(s) removed).")
        print(line, flush=True)
        return line

    def exclusive(self, what: str):
        """Context manager for other GPU work of this extension (captioning): refused while a job runs."""
        return _Exclusive(self, what)

    # ---- the worker ------------------------------------------------------------------------------------------
    def _run(self, job: TrainingJob) -> None:
        try:
            with _holding(self.host.gpu_lock(), lambda: job.set_message(WAITING_FOR_WEBUI)):
                self._run_locked(job)
        except Exception as exc:  # the lock itself failed: still end in a final state
            if job.active:
                job.finish("error", f"{type(exc).__name__}: {exc}")
        finally:
            job.done.set()

    def _run_locked(self, job: TrainingJob) -> None:
        """Everything up to the final state happens before host.end(), which completes the webui's progress
        task: the tab's last refresh then already sees the file, the card image and the refreshed Lora list."""
        host, model = self.host, None
        outcome = ("error", "The training ended without a result.", "")
        try:
            host.begin(job.task_id, "train-lora")
            if job.cancel_requested:
                outcome = ("cancelled", "Cancelled before training started.", "")
                return
            job.set_running()
            model = host.model()
            from lora_trainer.arch.detect import detect_arch

            job.arch = detect_arch(model)  # again: the checkpoint may have changed while we waited
            from lora_trainer.ui.clip_skip import resolve_clip_skip

            clip_skip = resolve_clip_skip(host, job.config, job.arch)  # 0 = the webui's setting, now
            if job.arch == "sd1":
                job.add_log(f"clip skip {clip_skip}")
            host.release_webui_loras(model)
            result, previews = self._train(job, model)
            final_file = str(getattr(result, "final_file", "") or "")
            status = getattr(result, "status", "completed")
            message = getattr(result, "message", "") or "Done."
            if status == "cancelled" and job.stop_reason in STOP_REASONS:
                message = f"{STOP_REASONS[job.stop_reason]} {message}"
            outcome = (status, message, final_file)
            for path in getattr(result, "files", None) or []:
                if str(path) not in job.files:  # normally reported by the on_saved hook already
                    job.on_saved(path)
            self._write_card_preview(job, previews, final_file)
        except Exception as exc:
            job.add_log(traceback.format_exc().rstrip())
            outcome = ("error", f"{type(exc).__name__}: {exc}", "")
            traceback.print_exc()  # the console gets the traceback; the tab gets the message
        finally:
            try:
                host.after_training(model)
            except Exception as exc:
                job.add_log(f"restoring the model after training failed: {exc}")
            try:
                host.refresh_loras()
            except Exception as exc:
                job.add_log(f"could not refresh the Lora cards: {exc}")
            if job.config.pivotal_tuning:
                try:
                    host.reload_embeddings()
                except Exception as exc:
                    job.add_log(f"could not reload the embeddings (restart the webui to see the token): {exc}")
            job.finish(*outcome)
            try:
                host.end(job.task_id)
            except Exception as exc:  # the job's result stands; the webui's progress state is the host's
                job.add_log(f"could not release the webui's progress state: {exc}")

    def _train(self, job: TrainingJob, model):
        from lora_trainer.train import CancelToken, TrainHooks

        train_fn = self._train_fn or _default_train()
        previews = self._make_previews(job)

        bar_failed = []

        def progress(p):
            job.on_progress(p)
            try:
                self.host.update(job.progress.get("step") or 0, job.progress.get("total_steps") or 0,
                                 progress_text(job))
            except Exception as exc:  # the webui's progress bar is cosmetic: never the end of a training
                if not bar_failed:
                    bar_failed.append(exc)
                    job.add_log(f"warning: the webui progress bar could not be updated: {exc}")

        def stop() -> bool:
            if job.cancel_requested:
                return True
            if self.host.interrupted():  # the Interrupt button / API; a Reload UI is not one (host's job)
                job.stop_reason = job.stop_reason or "interrupt"
                return True
            return False

        cancel = CancelToken(extra_check=stop)
        hooks = TrainHooks(on_sample=previews, on_saved=job.on_saved, on_log=job.add_log,
                           model_identity=_checkpoint_identity(self.host, job))
        return train_fn(model, job.config, progress=progress, cancel=cancel, hooks=hooks), previews

    def _write_card_preview(self, job: TrainingJob, previews, final_file: str) -> None:
        """The newest LoRA preview becomes `<name>.preview.png`, the image the webui's Lora card shows."""
        image = getattr(previews, "last_lora_image", None)
        if image is None or not final_file or not self.host.setting("train_lora_card_preview", True):
            return
        from pathlib import Path

        from lora_trainer.ui.previews import save_image_atomically

        target = Path(final_file).with_suffix(".preview.png")
        try:
            save_image_atomically(image, target)
            job.add_log(f"card preview: {target}")
        except Exception as exc:  # noqa: BLE001 - the LoRA is saved; the card image is a nicety
            job.add_log(f"could not write the card preview {target}: {exc}")

    def _make_previews(self, job: TrainingJob):
        if self._preview_factory is not None:
            return self._preview_factory(self.host, job)
        from lora_trainer.ui.previews import PreviewMaker

        return PreviewMaker(self.host, job)


@contextlib.contextmanager
def _holding(lock, on_wait: Callable[[], None]):
    """Hold the webui's queue lock; `on_wait` only when another job holds it now (a non-blocking try first)."""
    acquire = getattr(lock, "acquire", None)
    if acquire is None:
        with lock:
            yield
        return
    if not acquire(blocking=False):
        on_wait()
        acquire()
    try:
        yield
    finally:
        lock.release()


def remove_temp_files(config) -> List[str]:
    """The temporary files of this run's saves (LoRA, state folders, previews) — left only when the process ends
    in the middle of a write."""
    from pathlib import Path

    from lora_trainer.train.saving import temp_files
    from lora_trainer.ui.previews import preview_dir

    removed = []
    for path in temp_files(Path(config.output_dir).expanduser(), config.output_name) + \
            temp_files(preview_dir(config), config.output_name):
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(str(path))
        except OSError:
            pass
    return removed


class _Exclusive:
    def __init__(self, runner: JobRunner, what: str):
        self.runner, self.what = runner, what

    def __enter__(self):
        with self.runner._lock:
            reason = self.runner.busy_reason()
            if reason:
                raise JobRefused(reason, status_code=409)
            self.runner._exclusive = self.what
        return self

    def __exit__(self, *exc):
        self.runner._exclusive = None
        return False
