"""Bad input, each made on the fly: nothing may raise out of the scan, everything shows up in the report, and
every image the scan accepts can really be loaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import (
    save_exif_jpeg,
    save_image,
    truncate,
    write_16bit_gray_png,
    write_16bit_rgb_png,
    write_bomb_png,
    write_caption,
)
from PIL import Image

from lora_trainer.dataset import DatasetError, DatasetOptions, scan_dataset
from lora_trainer.dataset.images import load_image


def reason_for(report, name: str) -> str:
    reasons = [r for p, r in report.skipped if Path(p).name == name]
    assert reasons, f"{name} not skipped: {report.skipped}"
    return reasons[0]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """One folder with every kind of bad file next to a few good ones."""
    root = tmp_path_factory.mktemp("messy")
    d = root / "10_mess"
    d.mkdir()
    save_image(d / "good.png", (320, 320))
    write_caption(d / "good.png", b"caf\xe9, red hair")  # not UTF-8
    truncate(save_image(d / "cut.png", (256, 256)))
    truncate(save_image(d / "cut.jpg", (256, 256), quality=90))
    truncate(save_image(d / "cut.webp", (256, 256)))
    truncate(save_image(d / "cut.bmp", (256, 256)))
    (d / "garbage.jpg").write_bytes(os.urandom(2048))
    (d / "notes.png").write_text("this is not a picture\n")
    (d / "zero.png").write_bytes(b"")
    write_bomb_png(d / "bomb.png")
    save_image(d / "one.png", (1, 1))
    save_image(d / "strip.png", (600, 10))
    save_image(d / "tiny.png", (100, 80))
    Image.new("RGBA", (300, 300), (10, 20, 30, 0)).save(d / "rgba.png")
    Image.new("LA", (300, 300), (10, 0)).save(d / "la.png")
    Image.new("P", (300, 300), 3).save(d / "palette.png", transparency=3)
    Image.new("CMYK", (300, 300), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    write_16bit_gray_png(d / "grey16.png", np.full((300, 300), 40000, dtype=np.uint16))
    write_16bit_rgb_png(d / "rgb16.png", np.full((300, 300, 3), 40000, dtype=np.uint16))
    save_exif_jpeg(d / "rotated.jpg", (400, 300), orientation=8)
    save_image(d / "really_gif.png", (300, 300), fmt="GIF")
    write_caption(d / "orphan.png", "caption with no image")
    (root / "5_empty").mkdir()
    (root / "not_numbered").mkdir()
    return root


@pytest.fixture(scope="module")
def messy_scan(messy):
    return scan_dataset(messy)


@pytest.mark.parametrize("name, words", [
    ("cut.png", "corrupt or truncated"),
    ("cut.jpg", "corrupt or truncated"),
    ("cut.bmp", "corrupt or truncated"),
    ("garbage.jpg", "not a readable image"),
    ("notes.png", "text file, not an image"),
    ("zero.png", "empty file"),
    ("bomb.png", "decompression bomb"),
    ("one.png", "1x1 is too small"),
    ("strip.png", "600x10 is too small"),
    ("orphan.txt", "caption file without an image"),
    ("5_empty", "empty folder"),
    ("not_numbered", "rename it like 10_not_numbered"),
])
def test_bad_files_are_skipped_with_a_reason(messy_scan, name, words):
    assert words in reason_for(messy_scan.report, name)


def test_truncated_webp_is_skipped(messy_scan):
    assert "cut.webp" in {Path(p).name for p, _ in messy_scan.report.skipped}


def test_odd_but_usable_images_are_kept_and_noted(messy_scan):
    used = {i.path.name for i in messy_scan.items}
    assert used == {"good.png", "tiny.png", "rgba.png", "la.png", "palette.png", "cmyk.jpg", "grey16.png",
                    "rgb16.png", "rotated.jpg", "really_gif.png"}
    warnings = "\n".join(messy_scan.report.warnings)
    assert "composited onto white" in warnings and "rgba.png" in warnings and "palette.png" in warnings
    assert "CMYK" in warnings and "grey16.png" in warnings
    assert "really GIF files named .png" in warnings
    assert "upscaled" in warnings and "tiny.png (100x80)" in warnings  # tiny: upscaled by default, and said so
    assert "not valid UTF-8" in warnings
    item = next(i for i in messy_scan.items if i.path.name == "good.png")
    assert item.caption == "caf\ufffd, red hair"
    rotated = next(i for i in messy_scan.items if i.path.name == "rotated.jpg")
    assert rotated.original_size == (300, 400)  # orientation 8: displayed portrait
    assert messy_scan.report.ok


def test_every_accepted_image_loads(messy_scan):
    for item in messy_scan.items:
        tensor, _ = load_image(item, flip=True)
        w, h = item.bucket
        assert tensor.shape == (3, h, w)
        assert np.isfinite(tensor.numpy()).all()


def test_report_renders(messy_scan):
    text = messy_scan.report.to_text()
    assert "bomb.png" in text and "Result: OK" in text
    assert messy_scan.report.to_dict()["skipped"]


def test_tiny_images_skipped_when_upscaling_is_off(messy):
    r = scan_dataset(messy, options=DatasetOptions(upscale_small_images=False)).report
    assert "smaller than the smallest bucket (256 px)" in reason_for(r, "tiny.png")


def test_no_upscale_mode_skips_images_below_one_step(tmp_path):
    save_image(tmp_path / "1_x" / "small.png", (40, 300))
    save_image(tmp_path / "1_x" / "ok.png", (200, 300))
    ds = scan_dataset(tmp_path, options=DatasetOptions(bucket_no_upscale=True))
    assert "shorter than the bucket step" in reason_for(ds.report, "small.png")
    assert [i.bucket for i in ds.items] == [(192, 256)]


def test_pixel_limit_is_configurable(tmp_path):
    save_image(tmp_path / "1_x" / "a.png", (300, 300))
    r = scan_dataset(tmp_path, options=DatasetOptions(max_image_pixels=50_000)).report
    assert "over the limit of 50,000" in reason_for(r, "a.png")
    assert not r.ok and "every file was skipped" in r.fix


def test_file_broken_after_scan_raises_dataset_error_with_path(tmp_path):
    path = save_image(tmp_path / "1_x" / "a.jpg", (512, 512), quality=90)
    (item,) = scan_dataset(tmp_path).items
    truncate(path, 0.3)
    with pytest.raises(DatasetError) as info:
        load_image(item, flip=False)
    assert info.value.path == path and "re-export" in str(info.value)
    path.write_text("now a text file")
    with pytest.raises(DatasetError):
        load_image(item, flip=False)
