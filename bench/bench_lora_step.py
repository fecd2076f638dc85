"""Step time and memory: our trainer (LoRA on the webui-style ldm/sgm model, in place) against the diffusers +
PEFT LoRA recipe (`train_text_to_image_lora.py`) on full-size SD1.5 and SDXL architectures (random weights).

    python bench/bench_lora_step.py --quick     # CPU: full-size models, reduced resolution and step count
    python bench/bench_lora_step.py             # GPU: the real sizes (512² SD1.5, 1024² SDXL)

Both sides: same rank/alpha and target layers (attention q/k/v/out, proj_in/out, feed-forward: kohya's set),
resolution, batch, precision, optimizer, gradient checkpointing, and cached text-encoder outputs. Ours runs the
real `lora_trainer.train()` on a generated dataset; step times come from its progress callbacks. Warm-up steps
are excluded; the median of the timed steps is reported.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from harness import (  # noqa: E402
    base_weight_index,
    duplicated_base_bytes,
    fmt_bytes,
    measure_memory,
    median,
    time_steps,
)
from reference_diffusers import build_reference_unet, reference_step_fn  # noqa: E402


@dataclass
class Case:
    arch: str  # "sd1" (SD1.5) or "sdxl"
    resolution: int
    precision: str  # "fp32", "fp16", "bf16"
    optimizer: str
    grad_ckpt: bool = True
    cache_latents: bool = True
    rank: int = 16

    @property
    def label(self) -> str:
        name = "SD1.5" if self.arch == "sd1" else "SDXL"
        cache = "" if self.cache_latents else ", no latent cache"
        return f"{name} {self.resolution}² bs1 r{self.rank} {self.precision} ckpt {self.optimizer}{cache}"


@dataclass
class Row:
    case: Case
    ours_s: float
    ref_s: float
    ours_peak: int
    ref_peak: int
    ours_beyond: int
    ref_beyond: int
    ours_dup: int
    ref_dup: int


def _dtype(precision: str):
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def make_dataset(root: Path, n: int, resolution: int) -> Path:
    from PIL import Image

    folder = root / "5_bench"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (resolution, resolution), (40 * i % 255, 90, 160)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("bench, a photo")
    return root


def run_ours(case: Case, device: str, warmup: int, steps: int, workdir: Path):
    from lora_trainer.config import TrainConfig
    from lora_trainer.testing import build_tiny_model
    from lora_trainer.train import TrainHooks, train

    model = build_tiny_model(case.arch, full_size=True)
    if device != "cpu":
        model.to(device)
    if case.precision != "fp32":  # the webui's default: UNet and text encoders in half precision
        model.model.to(_dtype(case.precision))
    base_ptrs, base_shapes = base_weight_index(model)
    data = make_dataset(workdir / f"data-{case.arch}-{case.resolution}", 4, case.resolution)
    cfg = TrainConfig(
        train_dir=str(data), output_dir=str(workdir / "out"), output_name=f"bench-{case.arch}", overwrite=True,
        resolution=case.resolution, network_dim=case.rank, network_alpha=case.rank / 2, optimizer=case.optimizer,
        max_train_steps=warmup + steps, max_train_epochs=0, train_text_encoder=False, cache_text_encoder_outputs=True,
        cache_latents=case.cache_latents, gradient_checkpointing=case.grad_ckpt, mixed_precision=case.precision,
        sample_every_n_steps=warmup + steps, seed=1,  # the scan runs once, after the last timed step
    )
    stamps: dict[int, float] = {}
    dup = {"bytes": 0}
    window = {}

    def progress(p):
        if p.phase == "training" and "mem" in window and not window.get("reset"):
            window["mem"].reset_peak()  # step memory excludes the one-off latent-caching pass
            window["reset"] = True
        if p.phase == "training" and p.step and p.step not in stamps:
            stamps[p.step] = time.perf_counter()

    def on_sample(step, epoch, network, adapter):  # the LoRA is attached here: look for copies of base weights
        dup["bytes"] = duplicated_base_bytes(base_ptrs, base_shapes)

    with measure_memory(device) as mem:
        window["mem"] = mem
        result = train(model, cfg, progress=progress, hooks=TrainHooks(on_sample=on_sample))
    if not result.ok:
        raise RuntimeError(f"our trainer failed: {result.status}: {result.message}")
    ordered = [stamps[k] for k in sorted(stamps)]
    times = [b - a for a, b in zip(ordered, ordered[1:])][warmup - 1:]  # stamps mark step ends: step 1 is dropped
    del model
    gc.collect()
    return median(times), mem, dup["bytes"]


def run_reference(case: Case, device: str, warmup: int, steps: int):
    dtype = _dtype(case.precision)
    autocast = None if case.precision == "fp32" else dtype
    unet = build_reference_unet("sdxl" if case.arch == "sdxl" else "sd15", case.rank, case.rank / 2, device,
                                dtype, case.grad_ckpt)
    ctx_dim = 2048 if case.arch == "sdxl" else 768
    lat = case.resolution // 8
    latents = torch.randn(1, 4, lat, lat, device=device)
    context = torch.randn(1, 77, ctx_dim, device=device)
    vector = torch.randn(1, 2816, device=device) if case.arch == "sdxl" else None
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _optimizer(case.optimizer, params)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0).float().to(device)
    # In the webui the loaded checkpoint is an ldm/sgm model: a diffusers UNet is a converted second copy of it.
    dup = sum(p.numel() * p.element_size() for p in unet.parameters() if not p.requires_grad)
    step = reference_step_fn(unet, latents, context, vector, optimizer, acp, autocast, device.split(":")[0])
    with measure_memory(device) as mem:
        times = time_steps(step, warmup, steps, device, mem)
    del unet, optimizer
    gc.collect()
    return median(times), mem, dup


def _optimizer(name, params):
    if name == "AdamW8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-4)
    return torch.optim.AdamW(params, lr=1e-4)


def cases(quick: bool, device: str, only: str) -> list[Case]:
    if quick:  # CPU: full-size architectures, small images, fp32 (no fast half precision on CPU)
        out = [Case("sd1", 256, "fp32", "AdamW"), Case("sd1", 256, "fp32", "AdamW8bit"),
               Case("sd1", 256, "fp32", "AdamW", cache_latents=False), Case("sdxl", 256, "fp32", "AdamW")]
    else:
        out = [Case("sd1", 512, "fp16", "AdamW"), Case("sd1", 512, "bf16", "AdamW"),
               Case("sd1", 512, "fp16", "AdamW8bit"), Case("sd1", 512, "fp16", "AdamW", cache_latents=False),
               Case("sdxl", 1024, "bf16", "AdamW")]
    return [c for c in out if only in ("all", c.arch)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized run (full architectures, small images)")
    ap.add_argument("--arch", default="all", choices=["all", "sd1", "sdxl"])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(args.quick, args.device, args.arch):
            print(f"... {case.label}", flush=True)
            o_s, o_mem, o_dup = run_ours(case, args.device, args.warmup, args.steps, Path(tmp))
            r_s, r_mem, r_dup = (float("nan"), None, 0) if not case.cache_latents else \
                run_reference(case, args.device, args.warmup, args.steps)
            rows.append(Row(case, o_s, r_s, o_mem.peak, r_mem.peak if r_mem else 0, o_mem.during_steps,
                            r_mem.during_steps if r_mem else 0, o_dup, r_dup))
            print(format_rows(rows[-1:]), flush=True)
    print()
    print(environment(args))
    print(format_rows(rows))
    return 0


def format_rows(rows: list[Row]) -> str:
    head = ("| configuration | ours s/step | diffusers+PEFT s/step | ratio (ours/ref) | ours peak | ref peak | "
            "ours memory during steps | ref memory during steps | ours duplicated base weights | "
            "ref duplicated base weights |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ratio = r.ours_s / r.ref_s if r.ref_s == r.ref_s else float("nan")
        ref = "—" if r.ref_s != r.ref_s else f"{r.ref_s:.3f}"
        lines.append(f"| {r.case.label} | {r.ours_s:.3f} | {ref} | {ratio:.2f} | {fmt_bytes(r.ours_peak)} | "
                     f"{fmt_bytes(r.ref_peak) if r.ref_peak else '—'} | {fmt_bytes(r.ours_beyond)} | "
                     f"{fmt_bytes(r.ref_beyond) if r.ref_peak else '—'} | {fmt_bytes(r.ours_dup)} | "
                     f"{fmt_bytes(r.ref_dup) if r.ref_peak else '—'} |")
    return "\n".join(lines)


def environment(args) -> str:
    import diffusers
    import peft

    cpu = platform.processor() or platform.machine()
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({cpu}, {os.cpu_count()} cores)"
    return (f"date {datetime.date.today()} · device {dev} · threads {torch.get_num_threads()} · torch "
            f"{torch.__version__} · diffusers {diffusers.__version__} · peft {peft.__version__} · python "
            f"{platform.python_version()} · command: python bench/bench_lora_step.py "
            f"{'--quick ' if args.quick else ''}--warmup {args.warmup} --steps {args.steps}")


if __name__ == "__main__":
    sys.exit(main())
