"""File names (kohya's, §5.15), the `ss_*` training metadata (§2.1) and writing a LoRA file."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import List, Optional

import torch

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def epoch_file(output_dir: Path, name: str, epoch: int) -> Path:
    return Path(output_dir) / f"{name}-{epoch:06d}.safetensors"


def step_file(output_dir: Path, name: str, step: int) -> Path:
    return Path(output_dir) / f"{name}-step{step:08d}.safetensors"


def final_file(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.safetensors"


def state_dir(lora_file: Path) -> Path:
    return lora_file.with_name(f"{lora_file.stem}-state")


def planned_files(output_dir: Path, name: str, *, steps_per_epoch: int, total_steps: int, epochs: int,
                  every_n_epochs: int, every_n_steps: int, start_step: int = 0) -> List[Path]:
    """Every LoRA file this run will write after `start_step`, intermediate ones first, the final one last."""
    files = []
    for step in range(start_step + 1, total_steps):
        if every_n_steps and step % every_n_steps == 0:
            files.append(step_file(output_dir, name, step))
        if every_n_epochs and steps_per_epoch and step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            if epoch % every_n_epochs == 0 and epoch < epochs:
                files.append(epoch_file(output_dir, name, epoch))
    files.append(final_file(output_dir, name))
    return files


class RunInfo:
    """Run-wide facts that go into every file of one run (kohya: all epoch files share ss_session_id)."""

    def __init__(self):
        self.session_id = random.SystemRandom().randint(0, 2**32)
        self.started_at = time.time()


def training_metadata(config, *, arch: str, optimizer_description: str, precision: str, report,
                      batches_per_epoch: int, total_steps: int, epochs: int, cache_latents: bool) -> dict:
    """The run's training parameters as kohya's train_network writes them (build_metadata adds `ss_` and the
    network / per-file keys: session id, start time, steps, epoch, output name, resolution, dataset JSON)."""
    c = config
    values = {
        "learning_rate": c.unet_lr, "unet_lr": c.unet_lr if c.train_unet else None,
        "text_encoder_lr": c.text_encoder_lr if c.train_text_encoder else None,
        "num_train_images": getattr(report, "num_train_images", 0),
        "num_reg_images": getattr(report, "num_reg_images", 0),
        "num_batches_per_epoch": batches_per_epoch, "num_epochs": epochs, "max_train_steps": total_steps,
        "gradient_checkpointing": c.gradient_checkpointing,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "lr_warmup_steps": c.warmup_steps(total_steps), "lr_scheduler": c.lr_scheduler,
        "mixed_precision": precision, "full_fp16": False,
        "max_token_length": getattr(c, "max_token_length", None),  # kohya: None = 75
        "cache_latents": cache_latents, "seed": c.seed, "noise_offset": c.noise_offset or None,
        "min_snr_gamma": c.min_snr_gamma or None, "optimizer": optimizer_description,
        "max_grad_norm": c.max_grad_norm, "prior_loss_weight": c.prior_loss_weight,
        "caption_dropout_rate": c.caption_dropout_rate,
        "caption_dropout_every_n_epochs": c.caption_dropout_every_n_epochs,
        "caption_tag_dropout_rate": c.caption_tag_dropout_rate,
        "loss_type": c.loss_type, "huber_c": c.huber_c, "huber_schedule": c.huber_schedule,
        "batch_size_per_device": c.train_batch_size,
        "total_batch_size": c.train_batch_size * c.gradient_accumulation_steps,
        "enable_bucket": c.enable_bucket, "min_bucket_reso": c.min_bucket_reso, "max_bucket_reso": c.max_bucket_reso,
        "bucket_no_upscale": c.bucket_no_upscale, "flip_aug": c.flip_aug, "random_crop": c.random_crop,
        "shuffle_caption": c.shuffle_caption, "keep_tokens": c.keep_tokens, "color_aug": False,
        "training_comment": c.training_comment or None,
        "zero_terminal_snr": c.zero_terminal_snr, "debiased_estimation": c.debiased_estimation_loss,
    }
    if c.min_timestep or c.max_timestep != 1000:
        values["min_timestep"], values["max_timestep"] = c.min_timestep, c.max_timestep
    return values


def save_network(path: Path, network, *, arch: str, config, training: dict, report, resolution: int, run: RunInfo,
                 step: int, epoch: int, overwrite: bool, prediction_type: Optional[str] = None,
                 model_identity: Optional[dict] = None) -> Path:
    """Write the LoRA (kohya keys, save_precision) with metadata via lora_file.save_lora (atomic, hashed).
    `ss_output_name` is the file's stem, so A1111 shows epoch files under their own names. `model_identity`
    (Host.checkpoint_identity) gives ss_sd_model_name / ss_sd_model_hash / ss_new_sd_model_hash, as kohya writes
    them: the checkpoint's file name without its folder, the webui's old 8-digit hash, the full sha256."""
    from ..lora_file import build_metadata, save_lora

    c = config
    identity = model_identity or {}
    timesteps = (c.min_timestep, c.max_timestep) if c.min_timestep or c.max_timestep != 1000 else None
    metadata = build_metadata(
        arch, output_name=path.stem, rank=c.network_dim, alpha=c.network_alpha, conv_rank=c.conv_dim,
        conv_alpha=c.conv_alpha, dropout=c.network_dropout, training=training,
        tag_frequency=report.tag_frequency() if report is not None else None,
        dataset_dirs=report.dataset_dirs() if report is not None else None,
        reg_dataset_dirs=(report.dataset_dirs(is_reg=True) or None) if report is not None else None,
        bucket_info=report.bucket_info() if report is not None else None, resolution=resolution,
        session_id=run.session_id, training_started_at=run.started_at, steps=step, epoch=epoch,
        clip_skip=max(1, c.clip_skip) if arch == "sd1" else None,  # 0 outside the webui = 1; SD2/SDXL: not applied
        prediction_type=prediction_type, timestep_range=timesteps,
        sd_model_name=_basename(identity.get("name")), sd_model_hash=identity.get("hash") or None,
        new_sd_model_hash=identity.get("sha256") or None)
    return save_lora(path, network.kohya_state_dict(), metadata, SAVE_DTYPES[c.save_precision], overwrite=overwrite)


def save_session_lora(s, path: Path, *, step: int, epoch: int, model_identity: Optional[dict], overwrite: bool) -> Path:
    """One LoRA file of a running Session `s` (a scheduled save, the final one, or the rescue after a failure):
    every file of a run carries the same metadata."""
    training = training_metadata(
        s.config, arch=s.adapter.arch, optimizer_description=s.optimizer_description, precision=s.precision.name,
        report=s.report, batches_per_epoch=s.batches_per_epoch, total_steps=s.total_steps, epochs=s.epochs,
        cache_latents=s.cache_latents)
    return save_network(path, s.network, arch=s.adapter.arch, config=s.config, training=training, report=s.report,
                        resolution=s.resolution, run=s.run, step=step, epoch=epoch, overwrite=overwrite,
                        prediction_type=s.adapter.prediction_type, model_identity=model_identity)


def temp_files(folder: Path, name: str) -> List[Path]:
    """Temporary files (and state folders) that saves of LoRA `name` write before renaming them into place:
    `.<file>.<hex>.tmp`. Left behind only when the process ended mid-write."""
    n = re.escape(name)
    patterns = (re.compile(rf"^\.{n}(?:-\d{{6}}|-step\d{{8}}(?:-\d+)?)?(?:\.safetensors|-state|\.preview\.png)"
                           rf"\.[0-9a-f]+\.tmp$"),
                re.compile(rf"^\.{n}-step\d{{6}}-\d+\.png\.[0-9a-f]+\.tmp$"))  # previews
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if any(pattern.match(p.name) for pattern in patterns))


def existing(paths: List[Path]) -> Optional[Path]:
    return next((p for p in paths if p.exists()), None)


def _basename(name: Optional[str]) -> Optional[str]:
    """Only the file name: a folder would identify the user's disk (kohya: os.path.basename)."""
    if not name:
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1]
