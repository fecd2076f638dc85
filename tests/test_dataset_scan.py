"""Folder layouts, captions and counts of scan_dataset on generated datasets (reference §3.1, §3.2, §3.5, §3.6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_fixtures import make_dataset, make_folder, make_mixed_dataset, save_image, write_caption
from PIL import ImageFile

from lora_trainer.dataset import DatasetOptions, scan_dataset

SQUARE, WIDE = (32, 32), (48, 32)  # small (fast) images: 512x512 and 640x384 buckets (ratios 1.0 and 1.5)


def skipped_reason(report, name: str) -> str:
    reasons = [r for p, r in report.skipped if Path(p).name == name]
    assert reasons, f"{name} not in skipped: {report.skipped}"
    return reasons[0]


# ---- folder mode ----------------------------------------------------------------------------------------------
def test_folder_mode_repeats_class_tokens_and_captions(tmp_path):
    make_folder(tmp_path / "img", "10_sks dog", [SQUARE] * 3, captions=["sks, dog, park", None, "sks, dog"])
    make_folder(tmp_path / "img", "3_sks_cat", [WIDE] * 2)
    make_folder(tmp_path / "img", "5_", [SQUARE])
    ds = scan_dataset(tmp_path / "img")
    r = ds.report
    assert r.ok and not r.flat_folder and r.fix == ""
    folders = {f.name: f for f in r.folders}
    dog = folders["10_sks dog"]
    assert (dog.repeats, dog.class_tokens, dog.images, dog.captions_found, dog.captions_missing) == (10, "sks dog", 3,
                                                                                                      2, 1)
    assert dog.caption_extension_used == ".txt"
    assert (folders["3_sks_cat"].repeats, folders["3_sks_cat"].class_tokens) == (3, "sks_cat")
    assert folders["5_"].class_tokens == ""
    by_name = {(i.folder, i.path.name): i for i in ds.items}
    assert by_name[("10_sks dog", "img_001.png")].caption == "sks dog"  # no caption file -> class tokens
    assert by_name[("10_sks dog", "img_001.png")].has_caption_file is False
    assert by_name[("10_sks dog", "img_000.png")].caption == "sks, dog, park"
    assert r.num_train_images == 3 * 10 + 2 * 3 + 1 * 5
    assert any("empty caption" in w for w in r.warnings)  # 5_: no caption, no class tokens


def test_caption_extension_fallback_is_reported(tmp_path):
    folder = make_folder(tmp_path, "2_x", [SQUARE] * 2, captions=["a", "b"], caption_ext=".caption")
    r = scan_dataset(tmp_path).report
    assert r.folders[0].captions_found == 2 and r.folders[0].caption_extension_used == ".caption"
    assert any(".caption" in w and "caption_extension is .txt" in w for w in r.warnings)
    # Both present: the configured one wins, the other is listed as not used.
    write_caption(folder / "img_000.png", "txt wins", ".txt")
    ds = scan_dataset(tmp_path)
    assert {i.path.name: i.caption for i in ds.items}["img_000.png"] == "txt wins"
    assert "takes precedence" in skipped_reason(ds.report, "img_000.caption")
    assert ds.report.folders[0].caption_extension_used == ".txt+.caption"


def test_caption_file_without_image_is_reported(tmp_path):
    folder = make_folder(tmp_path, "1_x", [SQUARE])
    write_caption(folder / "ghost.png", "lonely")
    (folder / "notes.md").write_text("hi")
    r = scan_dataset(tmp_path).report
    assert "without an image" in skipped_reason(r, "ghost.txt")
    assert "not an image" in skipped_reason(r, "notes.md")


def test_flat_folder_works_with_repeats_1_and_says_so(tmp_path):
    for i in range(3):
        save_image(tmp_path / "mychar" / f"{i}.PNG", SQUARE)  # extension case does not matter
    r = scan_dataset(tmp_path / "mychar").report
    assert r.ok and r.flat_folder and r.num_train_images == 3
    assert (r.folders[0].repeats, r.folders[0].class_tokens) == (1, "")
    assert "Flat folder" in r.to_text() and "10_mychar" in r.to_text()


def test_pointing_at_the_image_folder_itself_works_and_explains_kohya(tmp_path):
    make_folder(tmp_path / "img", "10_char", [SQUARE] * 2)
    r = scan_dataset(tmp_path / "img" / "10_char").report
    assert r.ok and not r.flat_folder
    assert (r.folders[0].repeats, r.folders[0].class_tokens, r.num_train_images) == (10, "char", 20)
    warning = next(w for w in r.warnings if "image folder '10_char' itself" in w)
    assert "No data found" in warning and str(tmp_path / "img") in warning


def test_parent_of_parent_gives_precise_fix(tmp_path):
    make_folder(tmp_path / "project" / "img", "10_char", [SQUARE])
    r = scan_dataset(tmp_path / "project").report
    assert not r.ok
    assert f"give {tmp_path / 'project' / 'img'} instead" in r.fix


def test_images_in_unnumbered_subfolder_fix_says_rename(tmp_path):
    make_folder(tmp_path / "img", "char", [SQUARE] * 2)
    r = scan_dataset(tmp_path / "img").report
    assert not r.ok and "10_char" in r.fix
    assert "its 2 images are not used" in skipped_reason(r, "char")


@pytest.mark.parametrize("setup, expect", [
    (lambda root: root.mkdir(), "10_mychar"),  # empty train folder
    (lambda root: None, "does not exist"),
    (lambda root: (root / "10_char").mkdir(parents=True), "every file was skipped"),  # only an empty N_name folder
])
def test_nothing_trainable_has_a_fix(tmp_path, setup, expect):
    root = tmp_path / "img"
    setup(root)
    r = scan_dataset(root).report
    assert not r.ok and expect in r.fix and r.total_steps == 0


def test_folders_not_named_n_name_and_zero_repeats_are_skipped(tmp_path):
    make_folder(tmp_path, "10_good", [SQUARE])
    make_folder(tmp_path, "misc", [SQUARE])
    make_folder(tmp_path, "0_zero", [SQUARE])
    (tmp_path / "4_empty").mkdir()
    save_image(tmp_path / "loose.png", SQUARE)
    make_folder(tmp_path / "10_good", "nested", [SQUARE])
    (tmp_path / ".hidden").mkdir()
    r = scan_dataset(tmp_path).report
    assert r.ok and [f.name for f in r.folders] == ["10_good", "4_empty"]
    assert "rename it like 10_misc" in skipped_reason(r, "misc")
    assert "must be 1 or more" in skipped_reason(r, "0_zero")
    assert "empty folder" in skipped_reason(r, "4_empty")
    assert "not inside one" in skipped_reason(r, "loose.png")
    assert "not scanned" in skipped_reason(r, "nested")
    assert not any(".hidden" in p for p, _ in r.skipped)


# ---- reg images and step counts -------------------------------------------------------------------------------
# (train folders, reg folders, batch, grad accum, epochs) -> expected numbers, worked out from kohya's rules:
# samples = images × repeats; reg registered up to the train count (+1 repeat per cycle); per bucket
# ceil(n / batch); steps/epoch = ceil(batches / accum); total = epochs × steps/epoch.
STEP_CASES = [
    # 3 square ×10 = 30 in 512x512, 2 wide ×5 = 10 in 640x384; batch 2 -> 15 + 5 = 20 batches
    ({"10_a": [SQUARE] * 3, "5_b": [WIDE] * 2}, {}, 2, 1, 2,
     dict(buckets={"512x512": 30, "640x384": 10}, batches=20, spe=20, total=40, train=40, reg=0)),
    # batch 4 -> ceil(30/4)=8 + ceil(10/4)=3 = 11; accum 2 -> 6 steps/epoch; 3 epochs -> 18
    ({"10_a": [SQUARE] * 3, "5_b": [WIDE] * 2}, {}, 4, 2, 3,
     dict(buckets={"512x512": 30, "640x384": 10}, batches=11, spe=6, total=18, train=40, reg=0)),
    # 2 ×10 = 20 train; 3 reg ×1 cycled up to 20 (7+7+6) -> 40 in one bucket
    ({"10_a": [SQUARE] * 2}, {"1_reg": [SQUARE] * 3}, 1, 1, 1,
     dict(buckets={"512x512": 40}, batches=40, spe=40, total=40, train=20, reg=20, reg_repeats=[7, 7, 6])),
    # 1 ×10 = 10 train; reg 2 ×3: first pass 3+3, then +1 each twice -> 5+5
    ({"10_a": [SQUARE]}, {"3_reg": [WIDE] * 2}, 3, 1, 2,
     dict(buckets={"512x512": 10, "640x384": 10}, batches=4 + 4, spe=8, total=16, train=10, reg=10,
          reg_repeats=[5, 5])),
]


@pytest.mark.parametrize("train, reg, batch, accum, epochs, expected", STEP_CASES)
def test_steps_and_buckets_match_kohya_formulas(tmp_path, train, reg, batch, accum, epochs, expected):
    make_dataset(tmp_path / "train", train)
    reg_dir = make_dataset(tmp_path / "reg", reg) if reg else None
    options = DatasetOptions(batch_size=batch, gradient_accumulation_steps=accum, epochs=epochs, prior_loss_weight=0.5)
    ds = scan_dataset(tmp_path / "train", reg_dir, options)
    r = ds.report
    assert r.buckets == expected["buckets"]
    assert (r.batches_per_epoch, r.steps_per_epoch, r.total_steps, r.epochs) == (
        expected["batches"], expected["spe"], expected["total"], epochs)
    assert (r.num_train_images, r.num_reg_samples) == (expected["train"], expected["reg"])
    assert ds.sampler(seed=1).batches_per_epoch == expected["batches"]
    if reg:
        assert [i.repeats for i in ds.reg_items] == expected["reg_repeats"]
        assert all(i.loss_weight == 0.5 for i in ds.reg_items)
        assert all(i.loss_weight == 1.0 for i in ds.train_items)


def test_surplus_reg_images_are_not_used(tmp_path):
    make_dataset(tmp_path / "train", {"2_a": [SQUARE]})
    make_dataset(tmp_path / "reg", {"1_reg": [SQUARE] * 5})
    ds = scan_dataset(tmp_path / "train", tmp_path / "reg")
    assert len(ds.reg_items) == 2 and ds.report.num_reg_images == 5 and ds.report.num_reg_samples == 2
    assert any("3 of 5" in w for w in ds.report.warnings)


def test_default_schedule_is_kohya_1600_steps(tmp_path):
    make_dataset(tmp_path, {"10_a": [SQUARE] * 5})  # 50 batches
    r = scan_dataset(tmp_path).report
    assert (r.steps_per_epoch, r.total_steps, r.epochs) == (50, 1600, 32)
    assert "1600" in r.schedule_note


# ---- metadata shapes ------------------------------------------------------------------------------------------
def test_metadata_shapes(tmp_path):
    make_folder(tmp_path / "img", "10_char", [SQUARE, WIDE], captions=["Red Hair, smile", "red hair,  ,outdoors"])
    make_folder(tmp_path / "img", "2_other", [SQUARE])
    make_folder(tmp_path / "reg", "1_person", [SQUARE] * 3)
    r = scan_dataset(tmp_path / "img", tmp_path / "reg").report
    assert r.tag_frequency() == {"10_char": {"red hair": 2, "smile": 1, "outdoors": 1}, "2_other": {"other": 1},
                                 "1_person": {"person": 3}}
    assert r.dataset_dirs() == {"10_char": {"n_repeats": 10, "img_count": 2}, "2_other": {"n_repeats": 2,
                                                                                       "img_count": 1}}
    assert r.dataset_dirs(is_reg=True) == {"1_person": {"n_repeats": 1, "img_count": 3}}
    info = r.bucket_info()
    # 512x512: 10 (char) + 2 (other) + 22 reg samples balanced to the 22 train samples; 640x384: 10.
    assert info["buckets"] == {"0": {"resolution": [512, 512], "count": 34}, "1": {"resolution": [640, 384],
                                                                                  "count": 10}}
    assert info["mean_img_ar_error"] == pytest.approx(r.mean_ar_error)
    json.dumps(r.to_dict())  # JSON-able for the UI
    assert r.to_dict()["skipped"] == [] and r.to_dict()["folders"][0]["name"] == "10_char"


def test_scan_reads_no_pixels(tmp_path, monkeypatch):
    """Sizes come from headers: no PNG/JPEG/WebP/BMP is decoded during a scan."""
    make_mixed_dataset(tmp_path, 10)
    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.format) or original(self))
    r = scan_dataset(tmp_path).report
    assert r.ok and r.num_train_images > 0 and not r.skipped
    assert loads == []


def test_relative_dot_path_and_os_junk(tmp_path, monkeypatch):
    folder = make_folder(tmp_path, "3_x", [SQUARE])
    (folder / "Thumbs.db").write_bytes(b"junk")
    (folder / "img_000_0512x0512_sd.npz").write_bytes(b"kohya")
    monkeypatch.chdir(folder)
    r = scan_dataset(".").report
    assert r.ok and (r.folders[0].name, r.folders[0].repeats) == ("3_x", 3)
    assert [Path(p).name for p, _ in r.skipped] == ["img_000_0512x0512_sd.npz"]
    assert "kohya latent cache" in r.skipped[0][1]
