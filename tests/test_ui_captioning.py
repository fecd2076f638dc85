"""Caption writing with injected caption functions (the webui's BLIP/DeepBooru in real use)."""

from __future__ import annotations

import pytest
from PIL import Image

from lora_trainer.ui.captioning import caption_folder, merge_caption

BLIP = ("BLIP", lambda img: "a photo of a red cat")
BOORU = ("DeepBooru", lambda img: "cat, red, solo")


@pytest.fixture
def folder(tmp_path):
    sub = tmp_path / "10_cat"
    sub.mkdir()
    for name in ("a.png", "b.jpg", "c.webp"):
        Image.new("RGB", (16, 16), "red").save(sub / name)
    (sub / "b.txt").write_text("cat, existing tag\n", encoding="utf-8")
    (sub / "notes.md").write_text("not an image", encoding="utf-8")
    hidden = tmp_path / ".thumbs"
    hidden.mkdir()
    Image.new("RGB", (8, 8)).save(hidden / "x.png")
    return tmp_path


def read(path):
    return path.read_text(encoding="utf-8").strip()


def test_skip_keeps_existing_captions_and_writes_missing_ones(folder):
    summary = caption_folder(str(folder), [BLIP, BOORU], mode="skip", trigger_word="mycat")
    sub = folder / "10_cat"
    assert (summary.written, summary.skipped, summary.appended) == (2, 1, 0)
    assert read(sub / "a.txt") == "mycat, a photo of a red cat, cat, red, solo"
    assert read(sub / "b.txt") == "cat, existing tag"
    assert not (folder / ".thumbs" / "x.txt").exists()  # hidden folders are left alone


def test_overwrite_replaces_existing_captions(folder):
    summary = caption_folder(str(folder), [BOORU], mode="overwrite")
    assert summary.written == 3
    assert read(folder / "10_cat" / "b.txt") == "cat, red, solo"


def test_append_adds_only_new_tags_after_the_existing_caption(folder):
    summary = caption_folder(str(folder), [BOORU], mode="append", trigger_word="mycat")
    assert (summary.appended, summary.written) == (1, 2)
    assert read(folder / "10_cat" / "b.txt") == "mycat, cat, existing tag, red, solo"


def test_other_extension_and_progress_callback(folder):
    seen = []
    caption_folder(str(folder), [BLIP], mode="skip", extension="caption",
                   on_progress=lambda i, n, name: seen.append((i, n)))
    assert (folder / "10_cat" / "a.caption").exists()
    assert seen[-1] == (3, 3)


def test_a_failing_image_is_reported_and_the_rest_captioned(folder):
    (folder / "10_cat" / "broken.png").write_bytes(b"not a png")
    summary = caption_folder(str(folder), [BLIP], mode="overwrite")
    assert summary.written == 3
    assert len(summary.failed) == 1 and "broken.png" in summary.failed[0][0]
    assert "1 failed" in summary.to_text()


def test_stop_request_stops_early(folder):
    summary = caption_folder(str(folder), [BLIP], mode="overwrite", should_stop=lambda: True)
    assert summary.stopped and summary.written == 0


def test_bad_arguments_raise_value_errors_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        caption_folder(str(tmp_path), [BLIP], mode="merge")
    with pytest.raises(ValueError, match="not a folder"):
        caption_folder(str(tmp_path / "missing"), [BLIP])
    with pytest.raises(ValueError, match="BLIP and/or DeepBooru"):
        caption_folder(str(tmp_path), [])


def test_merge_caption_moves_the_trigger_word_first_without_duplicates():
    assert merge_caption("", ["x, MyCat, y"], "mycat", "overwrite") == "mycat, x, y"
    assert merge_caption("a, b", ["b, c"], "", "append") == "a, b, c"
    assert merge_caption("a, b", ["c"], "", "overwrite") == "c"
