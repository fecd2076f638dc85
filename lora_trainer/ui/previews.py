"""Preview images during training: the webui's own txt2img with the LoRA being trained, one image per LoRA weight
(0 = the base model) side by side, same seed, shown in the tab and saved beside the output files."""

from __future__ import annotations

import os
import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

NATIVE_SIZE = {"sd1": 512, "sd2": 512, "sd2v": 768, "sdxl": 1024}


@dataclass
class PreviewPrompt:
    prompt: str
    negative_prompt: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    steps: Optional[int] = None
    cfg_scale: Optional[float] = None
    seed: Optional[int] = None


_OPTION_RE = re.compile(r"\s--(n|w|h|s|l|d)\s")


def parse_prompt_line(line: str) -> PreviewPrompt:
    """kohya's sample-prompt syntax: `a cat --n blurry --w 512 --h 768 --s 20 --l 7 --d 42`."""
    text = " " + line.strip() + " "
    pieces = _OPTION_RE.split(text)
    result = PreviewPrompt(prompt=pieces[0].strip())
    for flag, value in zip(pieces[1::2], pieces[2::2]):
        value = value.strip()
        try:
            if flag == "n":
                result.negative_prompt = value
            elif flag == "w":
                result.width = int(shlex.split(value)[0])
            elif flag == "h":
                result.height = int(shlex.split(value)[0])
            elif flag == "s":
                result.steps = int(shlex.split(value)[0])
            elif flag == "l":
                result.cfg_scale = float(shlex.split(value)[0])
            elif flag == "d":
                result.seed = int(shlex.split(value)[0])
        except (ValueError, IndexError):
            pass  # a bad option value keeps the default rather than stopping training
    return result


def weight_label(weight: float) -> str:
    return "base" if weight == 0 else f"LoRA {weight:g}"


MIN_TILE = 256  # smaller previews (tiny test models) are enlarged so the labels stay readable


def side_by_side(images: List, labels: List[str]):
    """One sheet: the images in a row with a caption strip above each."""
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, -(-MIN_TILE // max(1, min(im.width for im in images))))
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    strip = 20
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 14)
    except OSError:
        font = ImageFont.load_default()
    width = sum(im.width for im in images)
    height = max(im.height for im in images) + strip
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for im, label in zip(images, labels):
        sheet.paste(im.convert("RGB"), (x, strip))
        draw.text((x + 4, 2), label, fill="black", font=font)
        x += im.width
    return sheet


class PreviewOffline(RuntimeError):
    """The webui's txt2img tried to download something (its default live preview 'Approx NN' fetches
    vaeapprox-sdxl.pt for the first SDXL image) and there is no internet."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause} — the webui tried to download a model. Offline, set "
                         "Settings → Live previews → Live preview method to 'Approx cheap' (or put the file in "
                         "models/VAE-approx/)")


def looks_offline(exc: BaseException) -> bool:
    import socket
    from urllib.error import URLError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (URLError, socket.gaierror, ConnectionError)) or "urlopen error" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def preview_dir(config) -> Path:
    return Path(config.output_dir).expanduser() / f"{config.output_name}-previews"


class PreviewMaker:
    """The engine's `on_sample(step, epoch, network, adapter)` hook."""

    def __init__(self, host, job):
        self.host = host
        self.job = job
        self.config = job.config
        self.last_lora_image = None  # the newest image at the highest weight: used as the card preview

    def prompts(self) -> List[PreviewPrompt]:
        lines = [line for line in self.config.sample_prompts if line.strip()]
        if not lines and self.config.trigger_word:
            lines = [self.config.trigger_word]
        return [parse_prompt_line(line) for line in lines]

    def __call__(self, step: int, epoch: int, network, adapter=None) -> List[str]:
        prompts = self.prompts()
        if not prompts:
            self.job.add_log("preview skipped: no preview prompt and no trigger word")
            return []
        weights = list(self.config.sample_weights) or [0.0, 1.0]
        size = self.config.resolution or NATIVE_SIZE.get(self.job.arch, 512)
        saved_multiplier = getattr(network, "multiplier", 1.0)
        rng = _save_rng()
        paths = []
        try:
            for index, spec in enumerate(prompts):
                images = []
                for weight in weights:
                    network.multiplier = weight
                    try:
                        image = self.host.txt2img(
                            spec.prompt, spec.negative_prompt,
                            seed=spec.seed if spec.seed is not None else self.config.sample_seed,
                            steps=spec.steps or self.config.sample_steps,
                            cfg_scale=spec.cfg_scale if spec.cfg_scale is not None else self.config.sample_cfg_scale,
                            width=spec.width or size, height=spec.height or size)
                    except Exception as exc:
                        if looks_offline(exc):
                            raise PreviewOffline(exc) from exc
                        raise
                    if image is None:
                        self.job.add_log("preview skipped: txt2img is not available here")
                        return paths
                    images.append(image)
                self.last_lora_image = images[-1]
                sheet = side_by_side(images, [weight_label(w) for w in weights])
                paths.append(self._save(sheet, step, index))
                self.host.show_preview(sheet)
        finally:
            network.multiplier = saved_multiplier
            _restore_rng(rng)
        return paths

    def _save(self, sheet, step: int, index: int) -> str:
        folder = preview_dir(self.config)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.config.output_name}-step{step:06d}-{index}.png"
        save_image_atomically(sheet, path)
        self.job.add_preview(str(path))
        self.job.add_log(f"preview saved: {path}")
        return str(path)


def save_image_atomically(image, path: Path) -> Path:
    """PNG via a temporary file in the same folder and a rename: a crash never leaves half an image."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _save_rng():
    """Previews must not change the training's random stream (HN training does the same)."""
    try:
        import torch
    except ImportError:
        return None
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state) -> None:
    if not state:
        return
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
