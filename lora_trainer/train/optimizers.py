"""Optimizer construction by name (kohya-lora-format.md §5.11). Optional packages are imported only when chosen,
and a missing one becomes a MissingPackage message, not an ImportError."""

from __future__ import annotations

import importlib
import logging
from typing import List, Tuple

import torch

from .errors import MissingPackage, TrainError

logger = logging.getLogger(__name__)

# name -> (module, class, pip package or None for torch); order = config.OPTIMIZERS
_CLASSES = {
    "adamw": ("torch.optim", "AdamW", None),
    "adamw8bit": ("bitsandbytes.optim", "AdamW8bit", "bitsandbytes"),
    "lion": ("lion_pytorch", "Lion", "lion-pytorch"),
    "lion8bit": ("bitsandbytes.optim", "Lion8bit", "bitsandbytes"),
    "prodigy": ("prodigyopt", "Prodigy", "prodigyopt"),
    "adafactor": ("transformers.optimization", "Adafactor", "transformers"),
    "sgd": ("torch.optim", "SGD", None),
}
# Adafactor with these uses the lr we give it (kohya's recommended manual-lr form); relative_step=True ignores it.
_ADAFACTOR_MANUAL_LR = {"relative_step": False, "scale_parameter": False, "warmup_init": False}


def optimizer_class(name: str):
    key = name.lower()
    if key not in _CLASSES:
        raise TrainError(f"optimizer: unknown optimizer {name!r}; choose one of AdamW, AdamW8bit, Lion, Lion8bit, "
                         "Prodigy, Adafactor, SGD")
    module_name, class_name, package = _CLASSES[key]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingPackage(package or module_name, f"The optimizer {name}", "AdamW") from exc
    except Exception as exc:  # bitsandbytes raises RuntimeError etc. when its native library cannot load
        raise TrainError(f"The optimizer {name} could not be loaded ({exc}); choose AdamW instead.") from exc
    return getattr(module, class_name)


def build_optimizer(name: str, param_groups: List[dict], args: dict | None = None) -> Tuple[torch.optim.Optimizer, str]:
    """(optimizer, description for ss_optimizer, e.g. "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01)").
    Each param group carries its own "lr" (UNet / text-encoder learning rates)."""
    cls = optimizer_class(name)
    kwargs = dict(args or {})
    key = name.lower()
    if key == "adafactor":
        kwargs = {**_ADAFACTOR_MANUAL_LR, **kwargs}
        if kwargs.get("relative_step"):
            logger.warning("Adafactor with relative_step=True picks its own learning rate: the UNet/text-encoder "
                           "learning rates and the scheduler are ignored")
            param_groups = [{k: v for k, v in g.items() if k != "lr"} for g in param_groups]
            kwargs["lr"] = None
    first_lr = next((g["lr"] for g in param_groups if "lr" in g), None)
    try:
        if first_lr is not None and "lr" not in kwargs:
            kwargs["lr"] = first_lr  # some optimizers require a default lr; groups override it
        optimizer = cls(param_groups, **kwargs)
    except TypeError as exc:
        raise TrainError(f"optimizer_args {args!r} do not fit {name}: {exc}") from exc
    shown = {k: v for k, v in (args or {}).items()}
    description = f"{cls.__module__}.{cls.__name__}"
    if shown:
        description += "(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"
    return optimizer, description
