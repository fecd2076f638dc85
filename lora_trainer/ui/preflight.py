"""Quick checks before a job starts, each failing with a message a user can act on (shown in the tab, or as the
API's error detail) instead of a traceback minutes into the run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.config import TrainConfig
from lora_trainer.ui.host import Host


class JobRefused(Exception):
    """The job cannot start; `field` names the offending option when there is one."""

    def __init__(self, message: str, field: str = "", status_code: int = 400, details: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status_code = status_code
        self.details = details  # markdown for the tab (e.g. the Check dataset report), under the message


@dataclass
class Checked:
    model_title: str
    arch: str
    output_file: str


def check_model(host: Host) -> tuple:
    """(title, arch) of the loaded model, or JobRefused saying what to load."""
    from lora_trainer.arch.detect import UnsupportedModel, detect_arch

    try:
        model = host.model()
    except Exception as exc:  # the webui is in the middle of loading a checkpoint, or broken
        raise JobRefused(f"Cannot read the loaded checkpoint from the webui ({type(exc).__name__}: {exc}). Wait "
                         "until the checkpoint has loaded and try again.", status_code=409) from exc
    if model is None:
        raise JobRefused(host.no_model_message(), status_code=409)
    reason = host.unsupported_reason()
    if reason:
        raise JobRefused(f"Cannot train in this webui setup: {reason}.", status_code=409)
    try:
        arch = detect_arch(model)
    except UnsupportedModel as exc:
        raise JobRefused(f"The loaded checkpoint cannot be trained: {exc}", status_code=409) from exc
    return host.model_title(), arch


def _check_folder(path: str, field: str, label: str) -> None:
    if not path:
        raise JobRefused(f"{label}: choose a folder.", field)
    p = Path(path).expanduser()
    if not p.exists():
        raise JobRefused(f"{label}: '{path}' does not exist.", field)
    if not p.is_dir():
        raise JobRefused(f"{label}: '{path}' is a file, not a folder.", field)
    if not any(p.iterdir()):
        raise JobRefused(f"{label}: '{path}' is empty.", field)


def check_training_images(host: Host, config: TrainConfig) -> None:
    """Scan as Check dataset does: a dataset with no readable training image is refused now, with each file and
    why it cannot be used, instead of failing minutes later as a job."""
    from lora_trainer.ui.dataset_check import check_dataset, summary_markdown

    try:
        report = check_dataset(config, host)
    except ValueError as exc:
        raise JobRefused(f"Training images folder: {exc}", "train_dir") from exc
    if report.ok:
        return
    lines = [f"Training images folder: nothing to train in '{config.train_dir}': {report.fix or 'no usable images'}"]
    lines += [f"- {path}: {reason}" for path, reason in report.skipped[:30]]
    if len(report.skipped) > 30:
        lines.append(f"- ... and {len(report.skipped) - 30} more")
    raise JobRefused("\n".join(lines), "train_dir", details=summary_markdown(report))


def output_file(config: TrainConfig) -> Path:
    return Path(config.output_dir).expanduser() / f"{config.output_name.strip()}.safetensors"


def preflight(host: Host, config: TrainConfig) -> Checked:
    _check_folder(config.train_dir, "train_dir", "Training images folder")
    if config.reg_dir:
        _check_folder(config.reg_dir, "reg_dir", "Regularisation images folder")
    if config.network_weights and not Path(config.network_weights).expanduser().is_file():
        raise JobRefused(f"Start from LoRA file: '{config.network_weights}' is not a file.", "network_weights")
    if config.resume_state and not Path(config.resume_state).expanduser().is_dir():
        raise JobRefused(f"Resume from state folder: '{config.resume_state}' is not a folder.", "resume_state")
    if not config.output_dir:
        config.output_dir = host.default_output_dir()
    if config.pivotal_tuning and not config.pivotal_embeddings_dir:
        config.pivotal_embeddings_dir = host.embeddings_dir()
    out_dir = Path(config.output_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise JobRefused(f"Output folder: '{config.output_dir}' is a file.", "output_dir")
    parent = out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise JobRefused(f"Output folder: '{config.output_dir}' is not writable.", "output_dir")
    target = output_file(config)
    if target.exists() and not config.overwrite and not config.resume_state:
        raise JobRefused(f"LoRA name: {target} already exists. Choose another name or tick "
                         "'Overwrite an existing file'.", "output_name")
    title, arch = check_model(host)
    from lora_trainer.kohya_semantics import for_arch

    for_arch(config, arch)  # kohya's per-architecture rules (bucket step, ...): ConfigError naming the field
    check_training_images(host, config)
    return Checked(model_title=title, arch=arch, output_file=str(target))
