"""`python -m lora_trainer demo [--arch sd1|sd2|sd2v|sdxl] --output DIR`: train a tiny model on generated shapes
(CPU, well under a minute) and write DIR/demo-<arch>.safetensors."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..demo import DEMO_ARCHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="sd1", choices=DEMO_ARCHS, help="tiny model architecture (default sd1)")
    parser.add_argument("--output", type=Path, default=Path("out"), help="folder for the LoRA and the dataset")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")


def run(args) -> int:
    from ..demo import run_demo
    from .train_cmd import TqdmProgress, print_result, single_thread

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    single_thread()
    start = time.perf_counter()
    bar = TqdmProgress()
    print(f"demo: training a tiny {args.arch} model on generated shapes ({args.steps} steps, CPU)")
    result = run_demo(args.arch, args.output, steps=args.steps, progress=bar)
    bar.close()
    code = print_result(result)
    print(f"took {time.perf_counter() - start:.1f} s")
    return code
