"""Out-of-memory: recognising it, freeing what training allocated, and saying which setting to lower."""

from __future__ import annotations

import gc

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Give cached GPU memory back (to the webui). On the CPU refcounting already freed the tensors, and a full
    gc pass over the webui's millions of objects costs about a second for nothing."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()  # tensors kept alive only by reference cycles (e.g. an exception's traceback frames)
        torch.cuda.empty_cache()


def oom_advice(config, session=None) -> str:
    """The settings that lower memory most, in the order worth trying, skipping those already at their floor."""
    c = config
    tips = []
    if c.train_batch_size > 1:
        tips.append(f"train_batch_size {c.train_batch_size} → {max(1, c.train_batch_size // 2)} (raise "
                    "gradient_accumulation_steps to keep the effective batch)")
    if not c.gradient_checkpointing:
        tips.append("turn on gradient_checkpointing")
    if not c.cache_latents and not c.random_crop:
        tips.append("turn on cache_latents")
    resolution = getattr(session, "resolution", 0) or c.resolution
    if resolution and resolution > 512:
        tips.append(f"resolution {resolution} → {resolution - 256}")
    if c.max_bucket_reso and c.max_bucket_reso > (resolution or 0) * 1.5:
        tips.append(f"max_bucket_reso {c.max_bucket_reso} → {resolution}")
    if c.train_text_encoder:
        tips.append("untick train_text_encoder (then cache_text_encoder_outputs)")
    if c.optimizer in ("AdamW", "Lion", "Prodigy"):
        tips.append(f"optimizer {c.optimizer} → AdamW8bit")
    if c.network_dim > 32:
        tips.append(f"network_dim {c.network_dim} → 32")
    if c.mixed_precision == "fp32":
        tips.append("mixed_precision fp32 → auto")
    if not tips:
        tips.append("close other programs using the GPU, or start the webui with --medvram")
    return "Out of GPU memory. Training stopped and its memory was freed. Try: " + "; ".join(tips[:4]) + "."
