"""The tab's event handlers. Each returns a message instead of raising: a bad input is shown in the tab, never as
a traceback, and the progress bar is only attached to a job that really started."""

from __future__ import annotations

import functools
import json
import traceback
from typing import Any, Dict, List

import gradio as gr

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.ui import form, panels
from lora_trainer.ui.preflight import JobRefused, _check_folder


def _error(message: str) -> str:
    return f"<span class='train-lora-error'>⚠ {message}</span>"


def guarded(n_outputs: int):
    """Turn any exception into an error message in the first output (and leave the other outputs alone)."""

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except ConfigError as exc:
                message = _error(form.describe_error(exc))
            except JobRefused as exc:
                message = _error(exc.message.splitlines()[0])
                if exc.details:  # e.g. the Check dataset report: every file and why it cannot be used
                    message += "\n\n" + exc.details
            except Exception as exc:  # unexpected: the console gets the traceback, the tab a message
                traceback.print_exc()
                message = _error(f"{type(exc).__name__}: {exc}")
            return message if n_outputs == 1 else [message] + [gr.update()] * (n_outputs - 1)

        return wrapper

    return wrap


class Handlers:
    def __init__(self, runner):
        from lora_trainer.ui.dataset_check import FOLDER_HEADERS

        self.runner = runner
        self.host = runner.host
        self.folder_headers = FOLDER_HEADERS  # the dataset table's columns

    def _values(self, args) -> Dict[str, Any]:
        return {field.key: value for field, value in zip(form.FIELDS, args)}

    def _config(self, args) -> TrainConfig:
        return form.values_to_config(self._values(args), self.host.default_output_dir())

    # ---- model and status --------------------------------------------------------------------------------------
    def model_info(self) -> str:
        try:
            return panels.model_markdown(self.host)
        except Exception as exc:
            return _error(f"{type(exc).__name__}: {exc}")

    def status_text(self) -> str:
        """The status panel, computed per request (also the panel's value at every page load)."""
        return panels.status_markdown(self.runner.status())

    # Click answers (a refusal, a validation message) go to the notice, not to the status panel: the periodic
    # refresh rewrites the status but leaves the notice until the next click or the job's next state change
    # (`notice_key` remembers the state the notice was given in).
    def start(self, *args):
        """-> notice, notice_key, status, task_id, model_info"""
        answer = self._start(*args)
        if isinstance(answer, str):  # refused: a message; the progress bar stays as it is
            return answer, panels.state_key(self.runner.status()), self.status_text(), gr.update(), \
                self.model_info()
        job = answer
        return "", panels.state_key(job.snapshot()), panels.status_markdown(job.snapshot()), job.task_id, \
            self.model_info()

    @guarded(1)
    def _start(self, *args):
        return self.runner.start(self._config(args))

    def cancel(self):
        """-> notice, notice_key, status"""
        if self.runner.cancel():
            notice = "Cancelling after the current step; what was trained so far is saved."
        else:
            notice = "No training job is running."
        status = self.runner.status()
        return notice, panels.state_key(status), panels.status_markdown(status)

    def refresh(self, notice_key: str = ""):
        """-> status, loss plot, previews, log, send snippet, task_id, notice, notice_key"""
        try:
            status = self.runner.status()
            weight = float(self.host.setting("train_lora_send_weight", 0.8) or 0.8)
            previews = list(reversed(status.get("previews") or []))[:12]
            task_id = status.get("task_id", "") if status.get("state") in ("queued", "running") else ""
            key = panels.state_key(status)
            notice = ("", key) if key != notice_key else (gr.update(), gr.update())
            return (panels.status_markdown(status), panels.loss_frame(status), previews, panels.log_text(status),
                    panels.send_to_txt2img_text(status, weight), task_id, *notice)
        except Exception as exc:  # noqa: BLE001 - the panel must keep answering
            traceback.print_exc()
            return (_error(f"{type(exc).__name__}: {exc}"), *[gr.update()] * 7)

    # ---- dataset -------------------------------------------------------------------------------------------------
    @guarded(2)
    def check_dataset(self, *args):
        from lora_trainer.ui.dataset_check import check_dataset, folder_rows, summary_markdown

        config = self._config(args)
        _check_folder(config.train_dir, "train_dir", "Training images folder")
        if config.reg_dir:
            _check_folder(config.reg_dir, "reg_dir", "Regularisation images folder")
        report = check_dataset(config, self.host)
        rows = folder_rows(report)
        return summary_markdown(report), gr.update(value=rows or None, visible=bool(rows))

    @guarded(1)
    def caption(self, folder, trigger_word, extension, use_blip, use_deepbooru, mode, reg_dir=""):
        from lora_trainer.ui.captioning import caption_folder

        _check_folder((folder or "").strip(), "train_dir", "Training images folder")
        if not (use_blip or use_deepbooru or (trigger_word or "").strip()):
            return _error("Tick BLIP and/or DeepBooru (or enter a trigger word to add to the captions).")
        from lora_trainer.ui.captioning import CaptionModelError

        with self.runner.exclusive("Captioning"), self.host.gpu_lock():
            try:
                with self.host.captioners(bool(use_blip), bool(use_deepbooru)) as captioners:
                    summary = caption_folder(folder.strip(), captioners, mode=mode, trigger_word=trigger_word or "",
                                             extension=extension or ".txt", should_stop=self.host.interrupted,
                                             reg_dir=(reg_dir or "").strip())
            except CaptionModelError as exc:  # which model, why, and where its file goes
                return _error(str(exc))
            except ValueError as exc:  # bad mode / folder: a message, not a traceback
                return _error(str(exc))
        return summary.to_text().replace("\n", "\n\n")

    def browse_folder(self, path: str):
        return gr.update(choices=panels.folder_choices(path or ""), value=None, visible=True)

    def pick_folder(self, choice: str):
        return gr.update(value=choice), gr.update(choices=panels.folder_choices(choice), value=None)

    # ---- settings as JSON --------------------------------------------------------------------------------------
    @guarded(2)
    def settings_json(self, *args):
        config = self._config(args)
        return json.dumps(config.to_dict(), indent=2), "POST this as `{\"config\": ...}` to /train-lora/v1/start."

    def load_json(self, text: str) -> List[Any]:
        try:
            config = TrainConfig.from_dict(json.loads(text or "{}"))
        except (ValueError, ConfigError) as exc:
            message = form.describe_error(exc) if isinstance(exc, ConfigError) else f"invalid JSON: {exc}"
            return [_error(message)] + [gr.update() for _ in form.FIELDS]
        values = form.config_to_values(config)
        return ["Loaded."] + [values[f.key] for f in form.FIELDS]

    def load_kohya(self, text: str) -> List[Any]:
        """An sd-scripts / kohya_ss config (TOML or JSON, pasted into the box) into the form; lists what it ignores."""
        from lora_trainer.kohya_config import import_kohya, parse_text

        try:
            imported = import_kohya(parse_text(text or ""))
        except (ValueError, ConfigError) as exc:  # JSON/TOML syntax errors are ValueErrors too
            message = form.describe_error(exc) if isinstance(exc, ConfigError) else f"not a kohya config: {exc}"
            return [_error(message)] + [gr.update() for _ in form.FIELDS]
        values = form.config_to_values(imported.config)
        report = imported.report().replace("\n", "\n\n")
        return [f"Loaded the kohya config. {report}"] + [values[f.key] for f in form.FIELDS]
