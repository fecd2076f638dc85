"""Training state for an exact resume, without pickle (the webui restricts torch.load to safe types).

A state folder `<name>-state/` (or `<name>-000004-state/`, `<name>-step00000120-state/`) holds:
- `network.safetensors`: the LoRA weights in fp32 (kohya keys), not the fp16 copy that was saved for use;
- `optimizer.safetensors` + the tensor-free rest of the optimizer / scheduler state in `train_state.json`;
- `train_state.json`: step, epoch, seed, a config fingerprint, the RNG states (as lists of ints).
Random numbers of step s are derived from (seed, s), so the step is enough to continue the same stream; the
global RNG states are stored anyway for code that draws from them (LoRA dropout).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

from .errors import TrainError

STATE_VERSION = 1
_TENSOR = "__tensor__"


def _split(obj: Any, tensors: Dict[str, torch.Tensor], path: str) -> Any:
    """JSON-able structure, with tensors moved into `tensors` under a path key (and tuples / int keys tagged)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().clone().contiguous()  # no shared storage (safetensors refuses it)
        return {_TENSOR: path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _split(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a training state")


def _join(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__items__" in obj:
            return {k: _join(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def rng_states() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(states["cuda"]))


def save_state(folder: Path, *, network_tensors: Dict[str, torch.Tensor], optimizer, scheduler, scaler,
               step: int, epoch: int, info: dict) -> Path:
    """Write the state folder atomically (a temporary folder renamed over the old one)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in network_tensors.items()},
                  str(tmp / "network.safetensors"))
        tensors: Dict[str, torch.Tensor] = {}
        meta = {
            "version": STATE_VERSION, "step": step, "epoch": epoch, **info,
            "optimizer": _split(optimizer.state_dict(), tensors, "optimizer"),
            "scheduler": _split(scheduler.state_dict(), tensors, "scheduler"),
            "scaler": _split(scaler.state_dict(), tensors, "scaler") if scaler is not None else None,
            "rng": _split(rng_states(), tensors, "rng"),
        }
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_state(folder: Path) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(meta with optimizer/scheduler/scaler/rng state dicts rebuilt, fp32 network tensors)."""
    folder = Path(folder)
    meta_file = folder / "train_state.json"
    if not meta_file.is_file():
        raise TrainError(f"resume_state: {folder} is not a training state folder (no train_state.json); pick a "
                         "'<name>-state' folder written with 'save training state' on")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("version") != STATE_VERSION:
        raise TrainError(f"resume_state: {folder} was written by another version of the trainer")
    tensors = load_file(str(folder / "optimizer.safetensors"))
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        meta[key] = _join(meta[key], tensors)
    return meta, load_file(str(folder / "network.safetensors"))
