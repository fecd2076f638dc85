"""load_image: resize/crop geometry, crop offsets, flips and colour-mode conversions (reference §4.3, §4.5)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_fixtures import pattern, save_exif_jpeg, save_image, write_16bit_gray_png, write_16bit_rgb_png
from PIL import Image

from lora_trainer.dataset import DatasetOptions, scan_dataset
from lora_trainer.dataset.images import center_crop_top_left, load_image


def scan_one(path: Path, **options):
    """The ImageItem the scan makes for `path` (its folder scanned as a flat folder)."""
    ds = scan_dataset(path.parent, options=DatasetOptions(**options))
    (item,) = [i for i in ds.items if i.path == path]
    return item


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return ((tensor.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.int32)


# ---- geometry -------------------------------------------------------------------------------------------------
def test_resize_then_center_crop_matches_full_resize(tmp_path):
    path = save_image(tmp_path / "a.png", (600, 400), seed=3)
    item = scan_one(path)
    assert (item.original_size, item.bucket, item.resized_size) == ((600, 400), (640, 384), (640, 427))
    tensor, crop_top_left = load_image(item, flip=False)
    assert tensor.shape == (3, 384, 640) and tensor.dtype == torch.float32
    assert -1.0 <= tensor.min() and tensor.max() <= 1.0
    assert crop_top_left == ((427 - 384) // 2, 0) == center_crop_top_left(item)
    # Same pixels as kohya's "resize the whole image, then crop" (up to resampling at the window edges).
    reference = Image.open(path).convert("RGB").resize((640, 427), Image.Resampling.LANCZOS).crop((0, 21, 640, 405))
    diff = np.abs(to_uint8(tensor) - np.asarray(reference, dtype=np.int32))
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_downscale_uses_area_filter_and_matches(tmp_path):
    path = save_image(tmp_path / "big.png", (2048, 1536), seed=1)
    item = scan_one(path)
    assert (item.bucket, item.resized_size) == ((576, 448), (597, 448))
    tensor, (top, left) = load_image(item, flip=False)
    assert (top, left) == (0, (597 - 576) // 2)
    reference = Image.open(path).convert("RGB").resize((597, 448), Image.Resampling.BOX).crop((10, 0, 586, 448))
    assert np.abs(to_uint8(tensor) - np.asarray(reference, dtype=np.int32)).mean() < 1.0


def test_no_resize_crop_is_exact_and_flip_mirrors_offset(tmp_path):
    path = save_image(tmp_path / "odd.png", (301, 200), seed=5)
    item = scan_one(path, bucket_no_upscale=True)
    assert (item.bucket, item.resized_size) == ((256, 192), (301, 200))
    tensor, crop = load_image(item, flip=False)
    assert crop == (4, 22)  # (8 // 2, 45 // 2)
    assert np.array_equal(to_uint8(tensor), pattern((301, 200), 5)[4:196, 22:278].astype(np.int32))
    flipped, flipped_crop = load_image(item, flip=True)
    assert torch.equal(flipped, torch.flip(tensor, dims=[2]))
    assert flipped_crop == (4, 301 - 22 - 256) == center_crop_top_left(item, flip=True)


def test_random_crop_is_seeded_and_in_range(tmp_path):
    path = save_image(tmp_path / "odd.png", (301, 200), seed=5)
    item = scan_one(path, bucket_no_upscale=True, random_crop=True)
    offsets = set()
    for seed in range(12):
        tensor, (top, left) = load_image(item, flip=False, rng=random.Random(seed))
        assert 0 <= top <= 8 and 0 <= left <= 45
        assert np.array_equal(to_uint8(tensor), pattern((301, 200), 5)[top:top + 192, left:left + 256])
        offsets.add((top, left))
        assert load_image(item, flip=False, rng=random.Random(seed))[1] == (top, left)
    assert len(offsets) > 3


def test_sdxl_original_size_is_hw(tmp_path):
    item = scan_one(save_image(tmp_path / "a.png", (600, 400)))
    assert item.original_size_hw == (400, 600)


# ---- colour modes ---------------------------------------------------------------------------------------------
def halves(width: int, height: int, left, right, mode: str) -> Image.Image:
    img = Image.new(mode, (width, height), left)
    img.paste(Image.new(mode, (width // 2, height), right), (width // 2, 0))
    return img


def mean_rgb(tensor: torch.Tensor, region) -> np.ndarray:
    return to_uint8(tensor)[region].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("mode, transparent, opaque", [
    ("RGBA", (0, 0, 0, 0), (255, 0, 0, 255)),
    ("LA", (0, 0), (0, 255)),
])
def test_transparency_composited_on_white(tmp_path, mode, transparent, opaque):
    path = tmp_path / "t.png"
    halves(512, 512, transparent, opaque, mode).save(path)
    tensor, _ = load_image(scan_one(path), flip=False)
    assert np.allclose(mean_rgb(tensor, np.s_[:, :250]), [255, 255, 255], atol=1)
    assert np.allclose(mean_rgb(tensor, np.s_[:, 262:]), list(opaque[:-1]) * (3 if mode == "LA" else 1), atol=1)


def test_palette_with_and_without_transparency(tmp_path):
    img = halves(512, 512, 0, 1, "P")
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.save(tmp_path / "plain.png")
    img.save(tmp_path / "trans.png", transparency=0)
    plain, _ = load_image(scan_one(tmp_path / "plain.png"), flip=False)
    trans, _ = load_image(scan_one(tmp_path / "trans.png"), flip=False)
    assert np.allclose(mean_rgb(plain, np.s_[:, :250]), [0, 0, 0], atol=1)
    assert np.allclose(mean_rgb(trans, np.s_[:, :250]), [255, 255, 255], atol=1)
    assert np.allclose(mean_rgb(trans, np.s_[:, 262:]), [0, 0, 255], atol=1)


def test_cmyk_jpeg(tmp_path):
    halves(512, 512, (0, 0, 0, 0), (0, 255, 255, 0), "CMYK").save(tmp_path / "c.jpg", quality=95)
    tensor, _ = load_image(scan_one(tmp_path / "c.jpg"), flip=False)
    assert np.allclose(mean_rgb(tensor, np.s_[:, :240]), [255, 255, 255], atol=4)
    assert np.allclose(mean_rgb(tensor, np.s_[:, 272:]), [255, 0, 0], atol=6)


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.zeros((512, 512), dtype=np.uint16)
    values[:, 128:256] = 32896  # 128 in 8 bits
    values[:, 256:] = 65535
    path = write_16bit_gray_png(tmp_path / "g16.png", values)
    tensor, _ = load_image(scan_one(path), flip=False)
    u8 = to_uint8(tensor)
    assert (u8[:, :120] == 0).all() and (abs(u8[:, 136:248] - 128) <= 1).all() and (u8[:, 264:] == 255).all()


def test_16bit_rgb(tmp_path):
    values = np.zeros((512, 512, 3), dtype=np.uint16)
    values[..., 0] = 65535
    tensor, _ = load_image(scan_one(write_16bit_rgb_png(tmp_path / "rgb16.png", values)), flip=False)
    assert np.allclose(mean_rgb(tensor, np.s_[:, :]), [255, 0, 0], atol=1)


@pytest.mark.parametrize("mode", ["L", "1", "I", "YCbCr"])
def test_other_modes_load_as_rgb(tmp_path, mode):
    path = tmp_path / "m.png" if mode != "YCbCr" else tmp_path / "m.jpg"
    save_image(path, (320, 320), mode=mode)
    tensor, _ = load_image(scan_one(path), flip=False)
    assert tensor.shape == (3, 512, 512) and -1 <= tensor.min() and tensor.max() <= 1


def test_exif_rotation_applied_to_size_and_pixels(tmp_path):
    stored = np.zeros((384, 640, 3), dtype=np.uint8)
    stored[:, :320] = (255, 0, 0)  # left half red, right half blue as stored
    stored[:, 320:] = (0, 0, 255)
    path = save_exif_jpeg(tmp_path / "phone.jpg", (640, 384), orientation=6, array=stored)
    item = scan_one(path)
    assert item.original_size == (384, 640) and item.bucket == (384, 640)  # displayed portrait
    tensor, _ = load_image(item, flip=False)
    assert tensor.shape == (3, 640, 384)
    # Orientation 6 = rotate 90° clockwise to display: the stored left (red) half becomes the top.
    assert np.allclose(mean_rgb(tensor, np.s_[:300]), [255, 0, 0], atol=8)
    assert np.allclose(mean_rgb(tensor, np.s_[340:]), [0, 0, 255], atol=8)


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".jpeg", ".JPG"])
def test_formats(tmp_path, ext):
    path = save_image(tmp_path / f"a{ext}", (512, 512), seed=2)
    tensor, _ = load_image(scan_one(path), flip=False)
    assert tensor.shape == (3, 512, 512)


@pytest.mark.parametrize("orientation", [1, 6])
def test_large_jpeg_reduced_decode_matches_full_decode(tmp_path, orientation):
    """Big JPEGs are decoded at a reduced DCT scale (PIL draft) that still covers the resized size."""
    path = save_exif_jpeg(tmp_path / "photo.jpg", (2048, 1536), orientation=orientation)
    item = scan_one(path)
    displayed = (2048, 1536) if orientation == 1 else (1536, 2048)
    assert item.original_size == displayed
    tensor, (top, left) = load_image(item, flip=False)
    w, h = item.bucket
    assert tensor.shape == (3, h, w)
    full = Image.open(path)
    full = full.transpose(Image.Transpose.ROTATE_270) if orientation == 6 else full
    reference = full.convert("RGB").resize(item.resized_size, Image.Resampling.BOX).crop((left, top, left + w, top + h))
    assert np.abs(to_uint8(tensor) - np.asarray(reference, dtype=np.int32)).mean() < 2.0
