"""Write caption files for a dataset with caption functions the caller supplies (the webui's BLIP and DeepBooru).

`caption_folder` never loads a model itself: the caller passes (name, fn(PIL image) -> str) pairs, so this is
tested with plain functions and the webui adapter decides how models are loaded and unloaded.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

MODES = ("skip", "overwrite", "append")


class CaptionModelError(Exception):
    """A caption model could not be loaded (offline, the webui's download fails inside: BLIP shows 'IndexError:
    list index out of range'). The message says which model, why, and where its file goes."""

    def __init__(self, model: str, cause: BaseException, path: str, url: str = "", extra: str = ""):
        self.model, self.path, self.url = model, path, url
        cause_text = f"{type(cause).__name__}: {cause}".strip()
        source = f" (download it from {url})" if url else ""
        super().__init__(
            f"{model} could not be loaded ({cause_text}). The webui downloads it on first use, which needs internet; "
            f"offline, put the file at {path}{source} and try again.{(' ' + extra) if extra else ''}")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class CaptionSummary:
    written: int = 0
    appended: int = 0
    skipped: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    stopped: bool = False

    def to_text(self) -> str:
        parts = [f"{self.written} written", f"{self.appended} appended", f"{self.skipped} kept (already captioned)"]
        text = "Captioning: " + ", ".join(parts) + "."
        if self.stopped:
            text += " Stopped early."
        if self.failed:
            text += f" {len(self.failed)} failed:\n" + "\n".join(f"  {p}: {r}" for p, r in self.failed[:20])
        return text


def find_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def split_tags(caption: str) -> List[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def merge_caption(existing: str, new_parts: Sequence[str], trigger_word: str, mode: str) -> str:
    """The text to write: new captions (BLIP sentence, DeepBooru tags) joined with ', ', the trigger word first,
    and in append mode after the existing caption without repeating tags it already has."""
    tags: List[str] = []
    if mode == "append" and existing.strip():
        tags += split_tags(existing)
    for part in new_parts:
        for tag in split_tags(part):
            if tag.lower() not in (t.lower() for t in tags):
                tags.append(tag)
    trigger = trigger_word.strip()
    if trigger:
        tags = [t for t in tags if t.lower() != trigger.lower()]
        tags.insert(0, trigger)
    return ", ".join(tags)


def write_text_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder + rename: a crash or a full disk never leaves half a caption."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def caption_folder(folder: str, captioners: Sequence[Tuple[str, Callable]], mode: str = "skip",
                   trigger_word: str = "", extension: str = ".txt",
                   on_progress: Optional[Callable[[int, int, str], None]] = None,
                   should_stop: Optional[Callable[[], bool]] = None, reg_dir: str = "") -> CaptionSummary:
    """Caption every image under `folder` (sub-folders included) into `<image stem><extension>` files. Images
    under `reg_dir` (regularisation images) are captioned without the trigger word: they keep the class prior."""
    if mode not in MODES:
        raise ValueError(f"caption mode must be one of {', '.join(MODES)}, got {mode!r}")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"'{folder}' is not a folder")
    if not captioners and not trigger_word.strip():
        raise ValueError("choose BLIP and/or DeepBooru (or enter a trigger word to add)")
    extension = extension if extension.startswith(".") else "." + extension
    from PIL import Image

    reg_root = Path(reg_dir).expanduser().resolve() if reg_dir.strip() else None
    summary = CaptionSummary()
    images = find_images(root)
    for index, image_path in enumerate(images):
        if should_stop and should_stop():
            summary.stopped = True
            break
        caption_path = image_path.with_suffix(extension)
        if on_progress:
            on_progress(index, len(images), image_path.name)
        if mode == "skip" and caption_path.exists():  # an existing caption (even an empty one) is the user's
            summary.skipped += 1
            continue
        try:
            existing = caption_path.read_text(encoding="utf-8", errors="replace") if caption_path.exists() else ""
        except OSError as exc:
            summary.failed.append((str(caption_path), f"cannot read the existing caption: {exc}"))
            continue
        try:
            with Image.open(image_path) as img:
                rgb = img.convert("RGB")
            new_parts = [fn(rgb) for _, fn in captioners]
        except Exception as exc:  # a broken image or a model error: report it, caption the rest
            summary.failed.append((str(image_path), f"{type(exc).__name__}: {exc}"))
            continue
        trigger = "" if _is_under(image_path, reg_root) else trigger_word
        try:
            write_text_atomically(caption_path, merge_caption(existing, new_parts, trigger, mode) + "\n")
        except OSError as exc:
            summary.failed.append((str(caption_path), f"cannot write the caption: {exc}"))
            continue
        if mode == "append" and existing.strip():
            summary.appended += 1
        else:
            summary.written += 1
    if on_progress:
        on_progress(len(images), len(images), "")
    return summary


def _is_under(path: Path, root: Optional[Path]) -> bool:
    if root is None:
        return False
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False
