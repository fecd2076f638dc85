"""Generated dataset files for the dataset tests: every image is made by PIL (or by hand-written PNG bytes for
cases PIL will not write), nothing binary is committed."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

Size = Tuple[int, int]


def pattern(size: Size, seed: int = 0) -> np.ndarray:
    """An RGB uint8 array with structure (gradients + a seed-dependent tint) that compresses fast."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    r = np.broadcast_to(x, (h, w))
    g = np.broadcast_to(y, (h, w))
    b = np.full((h, w), (seed * 37) % 256, dtype=np.float32)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def save_image(path: Union[str, Path], size: Size = (64, 64), mode: str = "RGB", seed: int = 0,
               fmt: Optional[str] = None, **save_kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pattern(size, seed), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt, **save_kwargs)
    return path


def write_caption(image_path: Union[str, Path], text: Union[str, bytes], ext: str = ".txt",
                  encoding: str = "utf-8") -> Path:
    path = Path(image_path).with_suffix(ext)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def make_folder(root: Union[str, Path], name: str, sizes: Sequence[Size], captions: Optional[Iterable] = None,
                ext: str = ".png", caption_ext: str = ".txt") -> Path:
    """root/name/img_000.png ... with optional captions (None entries = no caption file)."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    captions = list(captions) if captions is not None else [None] * len(sizes)
    for i, (size, caption) in enumerate(zip(sizes, captions)):
        path = save_image(folder / f"img_{i:03d}{ext}", size, seed=i)
        if caption is not None:
            write_caption(path, caption, caption_ext)
    return folder


def make_dataset(root: Union[str, Path], spec: Dict[str, Sequence[Size]]) -> Path:
    """Folder-mode dataset: {"10_char": [(w, h), ...], ...} -> root."""
    root = Path(root)
    for name, sizes in spec.items():
        make_folder(root, name, sizes)
    return root


# ---- hand-made PNG bytes (16-bit RGB, decompression-bomb headers) -------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_raw_png(path: Union[str, Path], width: int, height: int, bit_depth: int, color_type: int,
                  pixels: Optional[np.ndarray] = None, idat: Optional[bytes] = None) -> Path:
    """Write a PNG from raw samples (big-endian for 16-bit). `idat` overrides the image data (for bomb headers)."""
    if idat is None:
        assert pixels is not None
        dtype = ">u2" if bit_depth == 16 else "u1"
        rows = pixels.astype(dtype).reshape(height, -1).tobytes()
        stride = len(rows) // height
        raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(height))
        idat = zlib.compress(raw)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(data)
    return path


def write_bomb_png(path: Union[str, Path], width: int = 30000, height: int = 30000) -> Path:
    """A tiny file whose header claims a huge image (a decompression bomb as PIL sees it)."""
    return write_raw_png(path, width, height, 8, 2, idat=zlib.compress(b"\x00" * 64))


def write_16bit_gray_png(path: Union[str, Path], values: np.ndarray) -> Path:
    h, w = values.shape
    return write_raw_png(path, w, h, 16, 0, pixels=values)


def write_16bit_rgb_png(path: Union[str, Path], values: np.ndarray) -> Path:
    h, w, _ = values.shape
    return write_raw_png(path, w, h, 16, 2, pixels=values)


# ---- damaged files ------------------------------------------------------------------------------------------
def truncate(path: Union[str, Path], keep: float = 0.5) -> Path:
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def save_exif_jpeg(path: Union[str, Path], stored_size: Size, orientation: int, array: Optional[np.ndarray] = None):
    """A JPEG stored as `stored_size` with an EXIF orientation tag (6 = display rotated 90° clockwise)."""
    img = Image.fromarray(array if array is not None else pattern(stored_size), "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return Path(path)


MIXED_SIZES = [(512, 512), (640, 480), (480, 640), (768, 512), (512, 768), (1024, 576), (576, 1024), (900, 300),
               (300, 900), (700, 700)]


def make_mixed_dataset(root: Union[str, Path], count: int = 30) -> Path:
    """`count` images over two folders, png/jpg/webp/bmp, mixed sizes, most with captions."""
    root = Path(root)
    exts = [".png", ".jpg", ".webp", ".bmp", ".jpeg"]
    for i in range(count):
        folder = root / ("10_alice" if i % 2 else "5_bob")
        folder.mkdir(parents=True, exist_ok=True)
        path = save_image(folder / f"pic_{i:02d}{exts[i % len(exts)]}", MIXED_SIZES[i % len(MIXED_SIZES)], seed=i)
        if i % 3:
            write_caption(path, f"tag{i % 4}, tag{i % 5}, shared")
    return root
