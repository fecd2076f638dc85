"""The demo: a tiny real-class model, a generated dataset of coloured shapes, a few dozen CPU steps, a LoRA file.

`python -m lora_trainer demo --arch sd1 --output out/` runs it; it is the README's "does it work here?" command.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Optional

DEMO_ARCHS = ("sd1", "sd2", "sd2v", "sdxl")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIZE = 64


def _shape_mask(shape: str, x: float, y: float) -> bool:
    """Is pixel (x, y) in [-1, 1]² inside the shape (centred, radius ~0.6)?"""
    if shape == "circle":
        return x * x + y * y < 0.36
    if shape == "square":
        return abs(x) < 0.55 and abs(y) < 0.55
    return -0.6 < y < 0.6 and abs(x) < (y + 0.6) / 2  # triangle, apex up (image y grows downwards)


def draw_shape(shape: str, color, background=(245, 245, 240), size: int = IMAGE_SIZE, jitter=(0.0, 0.0)):
    from PIL import Image

    img = Image.new("RGB", (size, size), background)
    pixels = img.load()
    for py in range(size):
        for px in range(size):
            x = (px + 0.5) / size * 2 - 1 - jitter[0]
            y = (py + 0.5) / size * 2 - 1 - jitter[1]
            if _shape_mask(shape, x, y):
                pixels[px, py] = color
    return img


def make_demo_dataset(root: Path, seed: int = 0, count: int = 8, repeats: int = 10) -> Path:
    """`root/10_demo/NN.png` + `NN.txt` ("demo, red circle"): 10 repeats, class token "demo". Returns root."""
    rng = random.Random(seed)
    folder = Path(root) / f"{repeats}_demo"
    folder.mkdir(parents=True, exist_ok=True)
    combos = [(c, s) for c in COLORS for s in SHAPES]
    rng.shuffle(combos)
    for i, (color, shape) in enumerate(combos[:count]):
        jitter = (rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2))
        draw_shape(shape, COLORS[color], jitter=jitter).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"demo, {color} {shape}\n", encoding="utf-8")
    return Path(root)


def demo_config(arch: str, train_dir: Path, output_dir: Path, steps: int = 30):
    from .config import TrainConfig

    return TrainConfig(
        train_dir=str(train_dir), output_dir=str(output_dir), output_name=f"demo-{arch}", overwrite=True,
        resolution=IMAGE_SIZE, enable_bucket=False, min_bucket_reso=IMAGE_SIZE, max_bucket_reso=IMAGE_SIZE,
        network_dim=8, network_alpha=8, train_batch_size=2, max_train_steps=steps,
        unet_lr=1e-3, text_encoder_lr=5e-4,  # tiny random models need a large step to show a trend in 30 steps
        optimizer="AdamW", lr_scheduler="constant", mixed_precision="fp32", gradient_checkpointing=False,
        cache_latents=True, seed=42, save_precision="fp16")


def run_demo(arch: str, output: Path, steps: int = 30, progress: Optional[Callable] = None, log=None):
    """Build the tiny `arch` model, generate the dataset under output/demo-data, train, return the TrainResult."""
    from .testing import build_tiny_model
    from .train import TrainHooks, train

    if arch not in DEMO_ARCHS:
        raise ValueError(f"unknown demo architecture {arch!r}; choose one of {', '.join(DEMO_ARCHS)}")
    output = Path(output)
    data = make_demo_dataset(output / "demo-data")
    model = build_tiny_model(arch, seed=0)
    config = demo_config(arch, data, output, steps)
    return train(model, config, progress=progress, hooks=TrainHooks(on_log=log))


def loss_trend(history) -> tuple:
    """(mean of the first quarter, mean of the last quarter) of a loss history: the demo's one-line verdict."""
    n = max(1, len(history) // 4)
    head, tail = history[:n], history[-n:]
    return (sum(head) / len(head), sum(tail) / len(tail)) if history else (math.nan, math.nan)
