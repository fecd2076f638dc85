"""Caption files (finding, decoding) and per-sample caption processing in kohya's order (reference §3.2, §3.3)."""

from __future__ import annotations

import codecs
import random
from pathlib import Path
from typing import List, Optional, Tuple

from .options import DatasetOptions

# The two extensions kohya users have in the wild. Whichever is not configured is tried second, because a
# caption ignored for the wrong extension is the most common silent failure (kohya's default is .caption).
KNOWN_CAPTION_EXTENSIONS = (".txt", ".caption")


def caption_extensions(extension: str) -> List[str]:
    """Extensions to try, configured one first."""
    extension = extension if extension.startswith(".") else "." + extension
    return [extension] + [e for e in KNOWN_CAPTION_EXTENSIONS if e != extension.lower()]


def find_caption_file(image_path: Path, extension: str) -> Optional[Path]:
    for ext in caption_extensions(extension):
        candidate = image_path.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def decode_caption(data: bytes) -> Tuple[Optional[str], Optional[str]]:
    """Bytes -> (first non-empty line, warning). BOMs and CRLF are tolerated; bad UTF-8 never raises."""
    warning = None
    if data.startswith(codecs.BOM_UTF16_LE) or data.startswith(codecs.BOM_UTF16_BE):
        # Windows Notepad's "Unicode" encoding.
        text = data.decode("utf-16", errors="replace")
    else:
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data.decode("utf-8", errors="replace")
            warning = (f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); unreadable bytes "
                       "became U+FFFD — re-save the file as UTF-8")
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return None, "caption file is empty: the folder's class tokens are used instead"
    if len(lines) > 1:
        extra = f"has {len(lines)} lines; only the first is used (like kohya without wildcards)"
        warning = f"{warning}; {extra}" if warning else extra
    return lines[0], warning


def read_caption_file(path: Path) -> Tuple[Optional[str], Optional[str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read caption file ({exc.strerror or exc}): class tokens used instead"
    return decode_caption(data)


def read_caption(image_path: Path, extension: str = ".txt") -> Tuple[Optional[str], Optional[str]]:
    """(caption text or None when there is no usable caption file, warning or None)."""
    path = find_caption_file(Path(image_path), extension)
    if path is None:
        return None, None
    return read_caption_file(path)


def split_tags(caption: str) -> List[str]:
    tags = (t.strip() for t in caption.split(","))
    return [t for t in tags if t]


def process_caption(caption: str, options: DatasetOptions, rng: random.Random, epoch: int,
                    is_reg: bool = False) -> str:
    """One sample's caption (see `sample_caption`)."""
    return sample_caption(caption, options, rng, epoch, is_reg=is_reg)[0]


def sample_caption(caption: str, options: DatasetOptions, rng: random.Random, epoch: int,
                   is_reg: bool = False) -> Tuple[str, bool]:
    """(one sample's caption, whether caption dropout removed it). `epoch` counts from 1 (kohya: every_n_epochs=3
    drops on epochs 3, 6, ...).

    Order as kohya: whole-caption dropout, then (only if shuffling or tag dropout is on) split on commas, keep
    the first `keep_tokens` fixed, shuffle the rest, drop each remaining tag with caption_tag_dropout_rate, join
    with ", ". With those options off the caption is used verbatim. The trigger word is then put first unless it
    already is the first tag; a dropped caption stays "" (unconditional), trigger word included, just as kohya
    drops caption_prefix. Regularisation images (`is_reg`) never get the trigger word: they teach the class
    as it is, and "trigger, class" on them would teach the trigger the class average (prior preservation).
    """
    # rng.random() only when the rate is on, so turning an option off does not shift the random stream (kohya).
    dropped = options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate
    every = options.caption_dropout_every_n_epochs
    if dropped or (every > 0 and epoch % every == 0):
        return "", True
    trigger = "" if is_reg else options.trigger_word.strip()
    if options.shuffle_caption or options.caption_tag_dropout_rate > 0:
        tags = split_tags(caption)
        keep = options.keep_tokens
        if trigger:
            # The trigger goes first exactly once; if it already was the first tag it counted toward keep_tokens.
            if tags and tags[0] == trigger and keep > 0:
                keep -= 1
            tags = [t for t in tags if t != trigger]
        fixed, flexible = tags[:keep], tags[keep:]
        if options.shuffle_caption:
            rng.shuffle(flexible)
        if options.caption_tag_dropout_rate > 0:
            flexible = [t for t in flexible if rng.random() >= options.caption_tag_dropout_rate]
        return ", ".join(([trigger] if trigger else []) + fixed + flexible), False
    if trigger:
        stripped = caption.strip()
        if not stripped:
            return trigger, False
        if stripped.split(",", 1)[0].strip() != trigger:
            return f"{trigger}, {caption}", False
    return caption, False
