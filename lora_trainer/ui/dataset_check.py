"""'Check dataset': scan the folders with the options the training would use and return the dataset report."""

from __future__ import annotations

from typing import Any, List

from lora_trainer.config import TrainConfig
from lora_trainer.ui.previews import NATIVE_SIZE


def loaded_arch(host) -> str:
    """The loaded model's architecture, or "" (the check still works without a model: 512 px is assumed)."""
    try:
        from lora_trainer.arch.detect import detect_arch

        return detect_arch(host.model())
    except Exception:
        return ""


def dataset_options(config: TrainConfig, arch: str = ""):
    """The options the training itself would scan with (the engine's mapping)."""
    from lora_trainer.train.session import dataset_options as engine_options

    return engine_options(config, config.resolution or NATIVE_SIZE.get(arch, 512))


def check_dataset(config: TrainConfig, host):
    """The DatasetReport (never raises for bad files: they are listed in report.skipped / report.fix)."""
    from lora_trainer.dataset import scan_dataset

    options = dataset_options(config, loaded_arch(host))
    return scan_dataset(config.train_dir, config.reg_dir or None, options).report


def folder_rows(report) -> List[List[Any]]:
    """Rows for the tab's table: one per image folder."""
    rows = []
    for f in report.folders:
        rows.append([("reg: " if f.is_reg else "") + f.name, f.repeats, f.class_tokens or "-", f.images,
                     f.captions_found, f.captions_missing])
    return rows


FOLDER_HEADERS = ["folder", "repeats", "class tokens", "images", "captions", "missing captions"]


def summary_markdown(report) -> str:
    lines = []
    if report.ok:
        lines.append(f"**Ready to train:** {report.num_train_images} train samples (images x repeats)"
                     + (f" + {report.num_reg_samples} regularisation samples" if report.num_reg_samples else "")
                     + f", {report.steps_per_epoch} steps/epoch, {report.total_steps} steps in total"
                     + f"{report.schedule_note}.")
    else:
        lines.append(f"**Nothing to train.** {report.fix}")
    if report.buckets:
        buckets = ", ".join(f"{name}: {count}" for name, count in report.buckets.items())
        lines.append(f"Buckets ({report.bucket_description}): {buckets}")
    if report.skipped:
        lines.append(f"Skipped {len(report.skipped)} file(s):")
        lines += [f"- `{path}`: {reason}" for path, reason in report.skipped[:30]]
        if len(report.skipped) > 30:
            lines.append(f"- ... and {len(report.skipped) - 30} more")
    if report.warnings:
        lines += [f"- warning: {w}" for w in report.warnings]
    return "\n".join(lines)
