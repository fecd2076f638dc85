"""The memory plan against the measured peak of a real training step, on full-size architectures (random weights).

    python bench/plan_vs_measured.py --arch sd1 --resolution 128            # CPU: torch.profiler peak
    python bench/plan_vs_measured.py --arch sdxl --dtype bf16 --device cuda # GPU: max_memory_allocated

Builds only the model (one at a time), plans on a meta copy, measures one step (the second: the first creates the
optimizer state) with checkpointing on and off, prints a markdown table; --check exits 1 beyond 15 %.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def rows(arch, resolution, dtype, device, optimizers, ckpts, batch=1):
    from lora_trainer.config import TrainConfig
    from lora_trainer.plan.estimate import plan_for_model
    from lora_trainer.plan.measure import measure_step
    from lora_trainer.testing import build_tiny_model

    if arch == "sdxl" and device == "cpu":
        # the full SDXL UNet, with one-layer text encoders of the real widths: they are not trained and only
        # produce the (B, 77, 2048) context, so 3 GB of RAM are saved on a 24 GB machine
        from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        from lora_trainer.testing.tiny_sdxl import SDXL_FULL, build_tiny_sdxl

        model = build_tiny_sdxl(cfg=dict(SDXL_FULL, te1_layers=1, te2_layers=1))
    else:
        model = build_tiny_model(arch, full_size=True)
    if dtype != "fp32":
        model.model.to(DTYPES[dtype])
    model.to(device)
    out = []
    for optimizer in optimizers:
        for ckpt in ckpts:
            cfg = TrainConfig(train_dir="unused", resolution=resolution, train_batch_size=batch, optimizer=optimizer,
                              gradient_checkpointing=ckpt, train_text_encoder=False,
                              mixed_precision=dtype if dtype != "fp32" else "fp32")
            plan = plan_for_model(model, cfg, device=device, free=10**13)
            measured = measure_step(model, cfg, device=device)
            out.append(dict(case=f"{arch} {resolution}² b{batch} {dtype} {optimizer} ckpt {'on' if ckpt else 'off'}",
                            plan=plan.needed, measured=measured.peak, seconds=measured.seconds))
            gc.collect()
    del model
    gc.collect()
    return out


def table(results) -> str:
    lines = ["| case | plan | measured peak | measured / plan | step s |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['plan'] / 2**20:.0f} MiB | {r['measured'] / 2**20:.0f} MiB | "
                     f"{r['measured'] / r['plan']:.3f} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sd1", choices=["sd1", "sd2", "sd2v", "sdxl"])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--dtype", default=None, choices=list(DTYPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ckpt", default="both", choices=["on", "off", "both"], help="gradient checkpointing")
    ap.add_argument("--check", action="store_true", help="exit 1 when a plan is off by more than 15 %%")
    args = ap.parse_args(argv)
    # CPU: fp32 (the ldm/sgm UNets cannot train with bf16 weights on the CPU: mixed-dtype norms)
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "fp16")
    ckpts = {"on": [True], "off": [False], "both": [True, False]}[args.ckpt]
    results = rows(args.arch, args.resolution, dtype, args.device, ["AdamW"], ckpts)
    print(table(results))
    bad = [r for r in results if abs(r["measured"] - r["plan"]) > 0.15 * r["measured"]]
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
