"""`train --checkpoint FILE`: headless training on a single-file checkpoint, on one device or data-parallel on
several (`accelerate launch --num_processes N -m lora_trainer train ...`), with a JSON-lines log.

The engine is the tab's: `train(model, config)` with the same session and loop; only the model comes from a file
(lora_trainer/checkpoint) instead of the webui, and train/distributed.py shares the work between processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path,
                        help="SD1/SD2/SDXL base checkpoint (.safetensors/.ckpt) to train on, instead of --model")
    parser.add_argument("--vae", type=Path, help="VAE file to use instead of the checkpoint's (as the webui's)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                        help="weights' dtype (auto: the checkpoint's; fp16 becomes fp32 on a CPU)")
    parser.add_argument("--prediction", default="auto", choices=("auto", "eps", "v"),
                        help="SD2 eps/v (auto: a .yaml beside the checkpoint, else the weights, as the webui)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu... (default: the GPU if there is one; under accelerate, "
                                         "each process's own)")
    parser.add_argument("--log-json", type=Path, help="append one JSON line per step (step, loss, lr, it/s)")


def wanted(args) -> bool:
    from ..train.distributed import launched_world_size

    return bool(args.checkpoint or args.log_json or args.vae or launched_world_size() > 1)


class JsonLog:
    """Progress callback → JSON lines: {"step", "total_steps", "epoch", "loss", "avg_loss", "lr", "it_per_s",
    "eta_s", "time"} per optimizer step, then {"event": "done", ...}."""

    def __init__(self, path: Path, forward=None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        self._forward = forward
        self._start = time.time()

    def __call__(self, p) -> None:
        if self._forward is not None:
            self._forward(p)
        if p.phase == "training" and p.loss is not None:
            self.write(step=p.step, total_steps=p.total_steps, epoch=p.epoch, loss=p.loss, avg_loss=p.avg_loss,
                       lr=p.lr, it_per_s=p.it_per_s, eta_s=p.eta_s)

    def write(self, **fields) -> None:
        fields["time"] = round(time.time() - self._start, 3)
        self._file.write(json.dumps(fields) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _device(args, distributed_device):
    import torch

    if args.device and distributed_device is not None and torch.device(args.device).type != distributed_device.type:
        return distributed_device  # accelerate chose this process's device
    if args.device:
        return torch.device(args.device)
    if distributed_device is not None:
        return distributed_device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(args, config) -> int:
    import torch

    from ..checkpoint import CheckpointError, load_checkpoint
    from ..train import TrainHooks, train
    from ..train import distributed as dist
    from .train_cmd import TqdmProgress, print_result, single_thread

    if args.vae and not args.checkpoint:
        print("error: --vae replaces a checkpoint's VAE; give the checkpoint with --checkpoint")
        return 2
    if "OMP_NUM_THREADS" not in os.environ:
        single_thread()
    strategy, dist_device = dist.start(cpu=args.device == "cpu")
    main = strategy.is_main
    say = print if main else (lambda *_: None)
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    device = _device(args, dist_device)
    try:
        if strategy.world_size > 1:
            per_rank = config.gradient_accumulation_steps
            config.gradient_accumulation_steps *= strategy.world_size
            say(f"{strategy.world_size} processes: each optimizer step is {config.gradient_accumulation_steps} "
                f"micro-batches of {config.train_batch_size} ({per_rank} per process)")
        if args.checkpoint:
            try:
                model = load_checkpoint(args.checkpoint, vae=args.vae, dtype=args.dtype, device=device,
                                        prediction=args.prediction, log=say).model
            except CheckpointError as exc:
                say(f"error: {exc}")
                return 2
        else:
            from ..testing import build_tiny_model

            model = build_tiny_model(args.model).to(device)
        torch.manual_seed(config.seed)  # the LoRA's initial weights: the same on every rank
        bar = TqdmProgress() if main else None
        log_json = JsonLog(args.log_json, bar) if (args.log_json and main) else None
        progress = log_json or bar
        result = train(model, config, progress=progress, device=device,
                       hooks=TrainHooks(on_log=say if main else None, distributed=strategy))
        if bar is not None:
            bar.close()
        if log_json is not None:
            log_json.write(event="done", status=result.status, message=result.message, steps=result.steps_done,
                           file=str(result.final_file) if result.final_file else None)
            log_json.close()
        return print_result(result) if main else (0 if result.status == "completed" else 1)
    finally:
        dist.finish(strategy)
