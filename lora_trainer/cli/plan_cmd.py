"""`python -m lora_trainer plan --config run.toml --arch sdxl --full-size --vram 12`: will this run fit?

Builds the architecture's module tree on the `meta` device (no weights, no memory) and traces one training step of
the config on it (docs/PLAN.md). Without --full-size the tiny test architecture is planned (to try the command).
Exit status: 0 fits (or free memory unknown), 1 won't fit, 2 bad config.
"""

from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="a TOML/JSON config (train --config's); default: the defaults")
    parser.add_argument("--arch", required=True, choices=["sd1", "sd2", "sd2v", "sdxl"])
    parser.add_argument("--full-size", action="store_true", help="the real architecture sizes (else the tiny one)")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"],
                        help="the UNet's weight dtype as the webui loads it (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where training will run")
    parser.add_argument("--vram", type=float, help="the GPU's memory in GB (default: this machine's free memory)")
    parser.add_argument("--resolution", type=int, default=0, help="override the config's resolution")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    import torch

    from ..config import ConfigError, TrainConfig
    from ..plan.device import free_bytes
    from ..plan.estimate import plan_for_arch, plan_for_model

    try:
        config = TrainConfig.load(args.config) if args.config else TrainConfig(train_dir="(not needed to plan)")
        if not config.train_dir:
            config.train_dir = "(not needed to plan)"
        if args.resolution:
            config.resolution = args.resolution
        config.validate()
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    free = int(args.vram * 1e9) if args.vram else None
    if free is None and (args.device == "cpu" or torch.cuda.is_available()):
        free = free_bytes(args.device)
    if args.full_size:
        plan = plan_for_arch(args.arch, config, weight_dtype=args.dtype, device=args.device, free=free)
    else:
        from ..testing import build_tiny_model

        model = build_tiny_model(args.arch)
        if args.dtype != "fp32":
            model.model.to({"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype])
        plan = plan_for_model(model, config, device=args.device, free=free if free is not None else -1)
        if free is None:
            plan.free = None
    print(json.dumps(plan.to_dict(), indent=2, default=str) if args.json else plan.table())
    return 1 if plan.fits is False else 0
