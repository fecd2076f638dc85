"""The training engine: `train(model, config, ...)` on the model the webui already has loaded.

from lora_trainer.train import train, Progress, CancelToken, TrainResult, TrainHooks
"""

from __future__ import annotations

from .errors import MissingPackage, TrainError
from .loop import train
from .progress import CancelToken, Progress
from .result import TrainHooks, TrainResult

__all__ = ["CancelToken", "MissingPackage", "Progress", "TrainError", "TrainHooks", "TrainResult", "train"]
