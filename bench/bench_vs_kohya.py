"""Like-for-like against kohya sd-scripts' `train_network.py`: the same SD1 checkpoint file, dataset and settings,
each trainer in its own process under bench/probe_run.py; prints median step time and peak memory as ratios.

    SD_SCRIPTS_DIR=/path/to/sd-scripts SD_SCRIPTS_PYTHON=/path/to/its/venv/bin/python \\
        python bench/bench_vs_kohya.py [--checkpoint SD1.safetensors] [--steps 12] [--resolution 64]

Skips (exit 0, a message) without SD_SCRIPTS_DIR. sd-scripts is not part of this project: point at an existing
checkout and a venv with its requirements. sd-scripts builds SD1 with fixed sizes, so the default checkpoint is a
full-size SD1 with random weights (written from the project's builders, fp16, ~2 GB) in --workdir. Its tokenizer
is given offline through --tokenizer_cache_dir (a folder written from open_clip's vocabulary); HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "bench" / "probe_run.py"


def write_inputs(workdir: Path, checkpoint: Path | None, images: int, resolution: int):
    sys.path.insert(0, str(ROOT))
    from lora_trainer.demo import COLORS, SHAPES, draw_shape
    from lora_trainer.testing.tokenizer import write_clip_tokenizer

    data = workdir / "data" / "10_demo"
    data.mkdir(parents=True, exist_ok=True)
    combos = [(c, s) for c in COLORS for s in SHAPES][:images]
    for i, (color, shape) in enumerate(combos):
        draw_shape(shape, COLORS[color], size=resolution).save(data / f"{i:02d}.png")
        (data / f"{i:02d}.txt").write_text(f"demo, {color} {shape}\n", encoding="utf-8")
    tokenizer = write_clip_tokenizer(workdir / "tokenizers" / "openai_clip-vit-large-patch14")  # kohya's layout
    # openai/clip-vit-large-patch14's tokenizer_config: kohya pads to model_max_length
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "do_lower_case": True}), encoding="utf-8")
    if checkpoint is None:
        checkpoint = workdir / "sd1-full-random.safetensors"
        if not checkpoint.exists():  # in a child process, so this one does not keep the model's memory
            code = ("import sys, torch; from lora_trainer.checkpoint import save_checkpoint; "
                    "from lora_trainer.testing import build_tiny_model; "
                    "save_checkpoint(build_tiny_model('sd1', full_size=True), sys.argv[1], dtype=torch.float16)")
            subprocess.run([sys.executable, "-c", code, str(checkpoint)], check=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return workdir / "data", checkpoint


def our_config(workdir: Path, data: Path, args) -> Path:
    from lora_trainer.config import TrainConfig

    config = TrainConfig(
        train_dir=str(data), output_dir=str(workdir / "ours"), output_name="bench", overwrite=True,
        resolution=args.resolution, enable_bucket=False, network_dim=8, network_alpha=8, train_batch_size=1,
        max_train_steps=args.steps, unet_lr=1e-4, text_encoder_lr=0.0, train_text_encoder=False, optimizer="AdamW",
        lr_scheduler="constant", mixed_precision="fp32", gradient_checkpointing=False, cache_latents=True, seed=42,
        save_precision="fp16")
    path = workdir / "ours.json"
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    return path


def kohya_args(sd_scripts: Path, workdir: Path, data: Path, checkpoint: Path, args) -> list:
    return ["--torchvision-shim", "--script", str(sd_scripts / "train_network.py"), "--",
            "--pretrained_model_name_or_path", str(checkpoint), "--train_data_dir", str(data),
            "--output_dir", str(workdir / "kohya"), "--output_name", "bench", "--save_model_as", "safetensors",
            "--network_module", "networks.lora", "--network_dim", "8", "--network_alpha", "8",
            "--network_train_unet_only", "--resolution", str(args.resolution), "--train_batch_size", "1",
            "--max_train_steps", str(args.steps), "--learning_rate", "1e-4", "--unet_lr", "1e-4",
            "--optimizer_type", "AdamW", "--lr_scheduler", "constant", "--mixed_precision", "no",
            "--save_precision", "fp16", "--cache_latents", "--seed", "42", "--max_data_loader_n_workers", "0",
            "--caption_extension", ".txt", "--tokenizer_cache_dir", str(workdir / "tokenizers")]


def run_probe(python: str, out: Path, target: list, env: dict) -> dict:
    cmd = [python, str(PROBE), "--out", str(out)] + target
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def summarise(probe: dict, warmup: int) -> dict:
    def median_interval(ends):
        times = [b - a for a, b in zip(ends, ends[1:])][warmup:]
        return statistics.median(times) if times else float("nan")

    return {"steps": len(probe["step_ends"]), "median_step_s": median_interval(probe["step_ends"]),
            "median_step_cpu_s": median_interval(probe["step_ends_cpu"]),
            "peak_bytes": probe["peak_cuda"] or probe["peak_rss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="SD1 checkpoint (default: a full-size random one)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-vs-kohya"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="step intervals left out of the median")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args(argv)
    sd_scripts = os.environ.get("SD_SCRIPTS_DIR")
    if not sd_scripts:
        print("skipped: set SD_SCRIPTS_DIR to an sd-scripts checkout (and SD_SCRIPTS_PYTHON to its venv's python)")
        return 0
    sd_scripts = Path(sd_scripts)
    kohya_python = os.environ.get("SD_SCRIPTS_PYTHON", sys.executable)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data, checkpoint = write_inputs(workdir, args.checkpoint, args.images, args.resolution)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", "1"), PYTHONPATH=str(ROOT))
    ours = summarise(run_probe(sys.executable, workdir / "probe-ours.json",
                               ["-m", "lora_trainer", "--", "train", "--checkpoint", str(checkpoint), "--config",
                                str(our_config(workdir, data, args))], env), args.warmup)
    kenv = dict(env, PYTHONPATH=str(sd_scripts))
    kohya = summarise(run_probe(kohya_python, workdir / "probe-kohya.json",
                                kohya_args(sd_scripts, workdir, data, checkpoint, args), kenv), args.warmup)
    rows = {"ours": ours, "kohya": kohya,
            "ratio_step_time": ours["median_step_s"] / kohya["median_step_s"],
            "ratio_step_cpu_time": ours["median_step_cpu_s"] / kohya["median_step_cpu_s"],
            "ratio_peak_memory": ours["peak_bytes"] / kohya["peak_bytes"]}
    print(f"{'':8}{'steps':>6}{'median step (s)':>17}{'median CPU s/step':>19}{'peak memory (GiB)':>19}")
    for name in ("ours", "kohya"):
        r = rows[name]
        print(f"{name:8}{r['steps']:>6}{r['median_step_s']:>17.3f}{r['median_step_cpu_s']:>19.3f}"
              f"{r['peak_bytes'] / 2**30:>19.2f}")
    print(f"ratio ours/kohya: step time {rows['ratio_step_time']:.2f} (CPU time {rows['ratio_step_cpu_time']:.2f}), "
          f"peak memory {rows['ratio_peak_memory']:.2f}")
    (workdir / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
