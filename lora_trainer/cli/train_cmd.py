"""`python -m lora_trainer train --config run.toml --model sd1|--checkpoint MODEL.safetensors`: train from a config
file on a tiny model or a checkpoint file (the engine without the webui; inside the webui the Train LoRA tab builds
the same config)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


class TqdmProgress:
    """Progress callback → one tqdm bar per phase (caching, training)."""

    def __init__(self):
        self._bar = None
        self._phase = None

    def __call__(self, p) -> None:
        from tqdm import tqdm

        if p.phase in ("caching", "training") and p.total_steps:
            if self._phase != p.phase:
                self.close()
                self._phase = p.phase
                self._bar = tqdm(total=p.total_steps, desc=p.phase, unit="step" if p.phase == "training" else "img",
                                 initial=p.step, dynamic_ncols=True)
            self._bar.n = p.step
            if p.loss is not None:
                self._bar.set_postfix(loss=f"{p.loss:.4f}", avg=f"{p.avg_loss:.4f}",
                                      epoch=f"{p.epoch}/{p.total_epochs}", refresh=False)
            self._bar.refresh()
        elif p.phase == "done":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._phase = None, None


def single_thread() -> None:
    """Tiny models' ops are too small to gain from intra-op threads, and OpenMP threads spin-waiting against any
    other busy process made a 15 s demo take minutes on a 2-core machine: use one."""
    import torch

    torch.set_num_threads(1)


def print_result(result) -> int:
    print(f"{result.status}: {result.message}")
    if result.loss_history:
        from ..demo import loss_trend

        first, last = loss_trend(result.loss_history)
        print(f"loss: {first:.4f} (first quarter) -> {last:.4f} (last quarter) over {len(result.loss_history)} steps")
    return 0 if result.status == "completed" else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TrainConfig as .toml or .json (README 'Options')")
    source.add_argument("--kohya-config", type=Path, help="an sd-scripts / kohya_ss config (.toml or .json); "
                                                           "prints every option it does not use")
    parser.add_argument("--model", default="sd1", choices=("sd1", "sd2", "sd2v", "sdxl"),
                        help="tiny random-weight model of this architecture to train on (default sd1)")
    parser.add_argument("--output-dir", type=Path, help="overrides the config's output_dir")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every message")
    from . import headless

    headless.add_arguments(parser)  # --checkpoint, --vae, --dtype, --log-json; several GPUs (cli/headless.py)


def run(args) -> int:
    from ..config import ConfigError, TrainConfig
    from ..testing import build_tiny_model
    from ..train import TrainHooks, train

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    source = args.kohya_config or args.config
    try:
        if args.kohya_config:
            from ..kohya_config import load_kohya_config

            imported = load_kohya_config(args.kohya_config)
            print(f"{args.kohya_config}: {imported.report()}")
            config = imported.config
        else:
            config = TrainConfig.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"error: {source}: {exc}")
        return 2
    if args.output_dir:
        config.output_dir = str(args.output_dir)
    try:
        config.validate()
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    from . import headless

    if headless.wanted(args):
        return headless.run(args, config)
    single_thread()
    bar = TqdmProgress()
    model = build_tiny_model(args.model)
    result = train(model, config, progress=bar, hooks=TrainHooks(on_log=lambda line: print(line)))
    bar.close()
    return print_result(result)
