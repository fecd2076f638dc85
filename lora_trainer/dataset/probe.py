"""Read what scanning needs from an image *header*: size after EXIF rotation, mode, format, plus a cheap
integrity check. Full decoding only happens for formats with no cheap check (BMP, misnamed GIF/TIFF...) or
when a cheap check looks suspicious, so a report over hundreds of photos stays fast.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # kohya's list, matched case-insensitively
EXPECTED_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}

# EXIF orientation -> the transpose that makes the picture upright (same table as PIL.ImageOps.exif_transpose).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')

# Notes for modes that load_image converts, so the report can tell the user what will happen.
_ALPHA = "with transparency, composited onto white"
_DEEP = "with 16/32-bit samples, reduced to 8 bits per channel"
_MODE_NOTES = {
    "RGBA": _ALPHA,
    "LA": _ALPHA,
    "PA": _ALPHA,
    "CMYK": "in CMYK, converted to RGB (colours may shift; save as RGB to be sure)",
    "I": _DEEP,
    "I;16": _DEEP,
    "I;16B": _DEEP,
    "F": "with floating-point samples, reduced to 8 bits per channel",
}


@dataclass
class ProbeResult:
    size: Optional[Tuple[int, int]] = None  # (w, h) as displayed, i.e. after EXIF rotation
    orientation: int = 1
    mode: str = ""
    format: str = ""
    error: Optional[str] = None  # set -> the image must be skipped, this is the reason
    note: Optional[str] = None  # something the user should know, the image is still used


def header_orientation(img: Image.Image) -> int:
    """EXIF (or XMP) orientation from data PIL parsed at open time — never triggers a decode (PIL's own
    PngImageFile.getexif() loads the whole image when the header has no EXIF)."""
    raw = img.info.get("exif")
    if raw:
        try:
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(0x0112)
            if value:
                return int(value) if int(value) in ORIENTATION_TRANSPOSE else 1
        except Exception:  # broken EXIF is common and harmless: treat as upright
            return 1
    xmp = img.info.get("XML:com.adobe.xmp") or img.info.get("xmp")
    if xmp:
        match = _XMP_ORIENTATION.search(xmp.encode("utf-8", "ignore") if isinstance(xmp, str) else xmp)
        if match and int(match.group(1)) in ORIENTATION_TRANSPOSE:
            return int(match.group(1))
    return 1


def open_image(path: Path) -> Image.Image:
    """Image.open without PIL's DecompressionBombWarning noise (we apply our own limit; PIL still raises
    DecompressionBombError above twice its limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _looks_like_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        head.decode("utf-8")
        return bool(head) and b"\x00" not in head
    except (OSError, UnicodeDecodeError):
        return False


def _jpeg_tail_ok(path: Path, file_size: int) -> bool:
    """A complete JPEG ends with the EOI marker FF D9 (some writers pad with zeros after it)."""
    with open(path, "rb") as f:
        f.seek(max(0, file_size - 1024))
        tail = f.read().rstrip(b"\x00 \r\n")
    return tail.endswith(b"\xff\xd9")


def _webp_size_ok(path: Path, file_size: int) -> bool:
    """The RIFF header states the file length; a shorter file was cut off."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return False
    return int.from_bytes(head[4:8], "little") + 8 <= file_size


def _bmp_size_ok(img: Image.Image, file_size: int) -> bool:
    """Uncompressed BMP: pixel data offset + row stride × height must fit in the file."""
    if len(img.tile) != 1 or img.tile[0][0] != "raw":
        return False  # RLE-compressed: no cheap check
    _, box, offset, args = img.tile[0]
    stride = args[1] if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int) else 0
    return stride > 0 and offset + stride * (box[3] - box[1]) <= file_size


def _check_integrity(img: Image.Image, path: Path, file_size: int) -> Optional[str]:
    """None when the image looks decodable, else the reason. Cheap per-format checks first."""
    fmt = img.format or ""
    try:
        if fmt == "PNG":
            img.verify()  # walks the chunks and checks CRCs; no decompression
            return None
        if fmt == "JPEG" and _jpeg_tail_ok(path, file_size):
            return None
        if fmt == "WEBP" and _webp_size_ok(path, file_size):
            return None
        if fmt == "BMP" and _bmp_size_ok(img, file_size):
            return None
        img.load()  # other formats (misnamed GIF/TIFF...) or a suspicious file: decode to be sure
        return None
    except Exception as exc:  # any decoder error means the same thing to the user
        return f"corrupt or truncated image ({type(exc).__name__}: {exc}); re-export or remove it"


def probe_image(path: Path, max_pixels: Optional[int]) -> ProbeResult:
    """Never raises: problems come back as ProbeResult.error."""
    try:
        file_size = path.stat().st_size
    except OSError as exc:
        return ProbeResult(error=f"cannot read file ({exc.strerror or exc})")
    if file_size == 0:
        return ProbeResult(error="empty file (0 bytes)")
    try:
        img = open_image(path)
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return ProbeResult(error=f"refused as a possible decompression bomb ({size}, over PIL's limit); downscale "
                                 "it first")
    except UnidentifiedImageError:
        if _looks_like_text(path):
            return ProbeResult(error="this is a text file, not an image (check the file extension)")
        return ProbeResult(error="not a readable image (unknown or damaged format)")
    except Exception as exc:  # PIL raises many types for damaged headers
        return ProbeResult(error=f"corrupt or truncated image ({type(exc).__name__}: {exc}); re-export or remove it")
    try:
        width, height = img.size
        result = ProbeResult(mode=img.mode, format=img.format or "")
        if width < 1 or height < 1:
            result.error = f"image has no pixels ({width}x{height})"
            return result
        if max_pixels is not None and width * height > max_pixels:
            result.error = (f"refused: {width}x{height} = {width * height:,} pixels is over the limit of "
                            f"{max_pixels:,} (decompression-bomb guard); downscale it first")
            return result
        result.orientation = header_orientation(img)
        result.size = (height, width) if result.orientation in (5, 6, 7, 8) else (width, height)
        expected = EXPECTED_FORMATS.get(path.suffix.lower())
        if expected and result.format and result.format != expected:
            result.note = f"that are really {result.format} files named {path.suffix.lower()} (loaded anyway)"
        elif img.mode == "P" and "transparency" in img.info:
            result.note = _ALPHA
        else:
            result.note = _MODE_NOTES.get(img.mode)
        result.error = _check_integrity(img, path, file_size)
        return result
    finally:
        img.close()
