"""bench/gpu_check.sh: per case the measured peak (`max_memory_allocated`) next to the memory plan, the step time;
the fp16 GradScaler path; a provoked out-of-memory that must end with the model restored and advice; then the
diffusers+PEFT comparison (bench_lora_step.py). `--cpu-smoke`: tiny models on the CPU (profiler peak), an injected
OOM, no comparison — so CI keeps every path of the script running.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0]))
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# (arch, resolution, weight dtype, [(optimizer, checkpointing, medvram)]); one build per architecture, the UNet
# converted between dtypes in place (random weights either way)
GPU_CASES = [
    ("sd1", 512, "fp16", [("AdamW", True, False), ("AdamW", False, False), ("AdamW8bit", True, False),
                          ("AdamW8bit", False, False), ("AdamW", True, True)]),
    ("sd1", 512, "bf16", [("AdamW", True, False), ("AdamW", False, False), ("AdamW8bit", True, False)]),
    ("sdxl", 1024, "bf16", [("AdamW", True, False), ("AdamW", False, False), ("AdamW8bit", True, False),
                            ("AdamW", True, True)]),
    ("sdxl", 1024, "fp16", [("AdamW8bit", True, False)]),
]
SMOKE_CASES = [
    ("sd1", 128, "fp32", [("AdamW", False, False)]),
    ("sdxl", 128, "fp32", [("AdamW8bit", True, True)]),  # CPU: bf16 weights cannot train (mixed dtype)
]


def build(arch: str, dtype: str, device: str, full: bool):
    from lora_trainer.testing import build_tiny_model

    model = build_tiny_model(arch, full_size=full)
    model.model.to(DTYPES[dtype])  # the UNet in the checkpoint's dtype, as the webui holds it
    return model.to(device)


def set_medvram(model, on: bool, device: str):
    """--medvram: text encoders and VAE parked on the CPU, the UNet brought to the GPU for the step."""
    model.lowvram = on
    if on and device == "cuda":
        for part in (getattr(model, "cond_stage_model", None), getattr(model, "conditioner", None),
                     model.first_stage_model):
            if part is not None:
                part.to("cpu")
    elif not on:
        model.to(device)


def run_case(model, arch, res, dtype, optimizer, ckpt, medvram, device):
    from lora_trainer.config import TrainConfig
    from lora_trainer.plan.estimate import plan_for_model
    from lora_trainer.plan.measure import measure_step

    cfg = TrainConfig(train_dir="unused", resolution=res, optimizer=optimizer, gradient_checkpointing=ckpt,
                      train_text_encoder=False, mixed_precision=dtype if dtype != "fp32" else "fp32")
    plan = plan_for_model(model, cfg, device=device, free=10**13)
    try:
        measured = measure_step(model, cfg, device=device)
        peak, seconds, note = measured.peak, measured.seconds, ""
    except Exception as exc:  # noqa: BLE001 - report the case, go on with the others
        peak, seconds, note = 0, float("nan"), f"{type(exc).__name__}: {str(exc)[:80]}"
    scaler = "GradScaler" if (dtype == "fp16" and device == "cuda") else "—"
    label = f"{arch} {res}² {dtype} {optimizer} ckpt {'on' if ckpt else 'off'}{' medvram' if medvram else ''}"
    ratio = f"{peak / plan.needed:.3f}" if peak else "—"
    return f"| {label} | {plan.needed / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {ratio} | {seconds:.3f} | " \
           f"{scaler} | {note} |"


def provoke_oom(model, arch, device, smoke: bool) -> str:
    """A run far too big for the device (or, on the CPU, an injected CUDA-style OOM) must end `oom`, with advice,
    the model's weights unchanged and the memory given back."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.train import train
    from tests.dataset_fixtures import make_dataset

    probe = [p for p in model.parameters()][:: max(1, len(list(model.parameters())) // 8)]
    before = [p.detach().float().sum().item() for p in probe]
    hook = None
    if smoke:
        def boom(*_):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by gpu_check --cpu-smoke)")

        hook = model.model.diffusion_model.register_forward_pre_hook(boom)
    allocated = torch.cuda.memory_allocated() if device == "cuda" else 0
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", {"2_cat": [(256, 256)] * 4})
        big = 64 if smoke else 4096
        cfg = TrainConfig(train_dir=str(data), output_dir=str(Path(tmp) / "out"), resolution=big, enable_bucket=False,
                          train_batch_size=4, gradient_checkpointing=False, train_text_encoder=False,
                          max_train_steps=1, max_train_epochs=0, bucket_no_upscale=False)
        try:
            result = train(model, cfg, device=device)
        finally:
            if hook is not None:
                hook.remove()
    after = [p.detach().float().sum().item() for p in probe]
    leaked = (torch.cuda.memory_allocated() - allocated) if device == "cuda" else 0
    ok = result.status == "oom" and "Try:" in result.message and before == after and leaked < 64 * 2**20
    return (f"provoked OOM: status {result.status}, model restored {before == after}, memory left behind "
            f"{leaked / 2**20:.0f} MiB, advice: {result.message[:160]} → {'PASS' if ok else 'FAIL'}"), ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU (CI)")
    ap.add_argument("--skip-reference", action="store_true", help="skip the diffusers+PEFT comparison")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke, or on a GPU machine", file=sys.stderr)
        return 2
    started = time.perf_counter()
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"torch {torch.__version__} · device {name} · {'cpu-smoke (tiny models)' if smoke else 'full size'}\n")
    print("| case | plan | measured peak | measured / plan | step s | fp16 path | note |\n"
          "|---|---|---|---|---|---|---|")
    all_ok = True
    oom_line = ""
    cases = SMOKE_CASES if smoke else GPU_CASES
    model, built = None, None
    for index, (arch, res, dtype, variants) in enumerate(cases):
        if built != arch:
            model, built = build(arch, dtype, device, full=not smoke), arch
        else:
            model.model.to(DTYPES[dtype])
        for optimizer, ckpt, medvram in variants:
            set_medvram(model, medvram, device)
            line = run_case(model, arch, res, dtype, optimizer, ckpt, medvram, device)
            all_ok &= "Error" not in line
            print(line, flush=True)
        if arch == "sd1" and not oom_line:
            set_medvram(model, False, device)
            oom_line, ok = provoke_oom(model, arch, device, smoke)
            all_ok &= ok
        if index + 1 == len(cases) or cases[index + 1][0] != arch:
            model = built = None
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    print()
    print(oom_line)
    if not smoke and not args.skip_reference:
        print("\ndiffusers+PEFT comparison (bench/bench_lora_step.py):\n", flush=True)
        elapsed = time.perf_counter() - started
        arch = "all" if elapsed < 200 else "sd1"
        try:  # the whole script stays under 8 minutes
            subprocess.run([sys.executable, str(HERE / "bench_lora_step.py"), "--arch", arch, "--steps", "3"],
                           check=False, timeout=max(60, 460 - elapsed))
        except subprocess.TimeoutExpired:
            print("(comparison stopped at the script's time limit; run bench/bench_lora_step.py alone for all cases)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
