"""What `train()` returns, and the optional callbacks it makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

STATUSES = ("completed", "cancelled", "nan", "oom", "error")


@dataclass
class TrainResult:
    status: str  # one of STATUSES
    message: str  # for a human: what happened and what to do
    files: List[Path] = field(default_factory=list)  # every LoRA file written, in order
    final_file: Optional[Path] = None
    steps_done: int = 0
    loss_history: List[float] = field(default_factory=list)  # one value per optimizer step
    dataset_report: Any = None  # lora_trainer.dataset.DatasetReport, when the dataset was scanned
    state_dirs: List[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@dataclass
class TrainHooks:
    """on_sample(step, epoch, network, adapter): every config.sample_every_n_steps / _epochs, with the LoRA
    attached to the model and gradient checkpointing off, so the caller can render previews with the model.
    on_saved(path): after each LoRA file is written. on_log(text): human-readable log lines.
    model_identity: what the host knows of the loaded checkpoint for the file's metadata (Host.checkpoint_identity:
    file name, the webui's short hash, sha256), empty when it knows nothing.
    distributed: how micro-batches are shared and gradients synchronised across processes (train/distributed.py)."""

    on_sample: Optional[Callable[[int, int, Any, Any], None]] = None
    on_saved: Optional[Callable[[Path], None]] = None
    on_log: Optional[Callable[[str], None]] = None
    model_identity: Dict[str, str] = field(default_factory=dict)
    # several processes: train.distributed.DataParallel (None: this process trains alone, as in the webui tab)
    distributed: Any = None
