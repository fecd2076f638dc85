"""Learning-rate schedulers by name, from transformers (kohya's get_scheduler_fix uses the same functions).

One scheduler step per optimizer step. `lr_warmup_steps` < 1 is a fraction of the total (config.warmup_steps).
"""

from __future__ import annotations

import logging

import torch

from .errors import TrainError

logger = logging.getLogger(__name__)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0,
                    num_cycles: int = 1, power: float = 1.0):
    from transformers import optimization as opt

    if getattr(optimizer, "__class__", type).__name__ == "Adafactor" and optimizer.defaults.get("relative_step"):
        return opt.AdafactorSchedule(optimizer)  # reports Adafactor's own lr; nothing to schedule
    if name == "constant" and warmup_steps:
        logger.info("lr_scheduler 'constant' with warm-up: using constant_with_warmup")
        name = "constant_with_warmup"
    if name == "polynomial" and not optimizer.defaults.get("lr"):
        name = "constant"  # transformers refuses lr_end >= lr 0; an lr of 0 has nothing to decay anyway
    if name == "constant":
        return opt.get_constant_schedule(optimizer)
    if name == "constant_with_warmup":
        return opt.get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if name == "linear":
        return opt.get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if name == "cosine":
        return opt.get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if name == "cosine_with_restarts":
        return opt.get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, warmup_steps, total_steps,
                                                                       num_cycles=num_cycles)
    if name == "polynomial":
        lr_end = min(1e-7, optimizer.defaults["lr"] / 10)
        return opt.get_polynomial_decay_schedule_with_warmup(optimizer, warmup_steps, total_steps, lr_end=lr_end,
                                                              power=power)
    raise TrainError(f"lr_scheduler: unknown scheduler {name!r}; choose constant, constant_with_warmup, linear, "
                     "cosine, cosine_with_restarts or polynomial")
