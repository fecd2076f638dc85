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


# ---- issue 12: captioning never loses or half-writes a caption, and an offline model is a clear message ----------
def test_skip_never_touches_an_existing_caption_even_an_empty_one(folder):
    empty = folder / "10_cat" / "a.txt"
    empty.write_text("", encoding="utf-8")
    summary = caption_folder(str(folder), [BLIP], mode="skip")
    assert empty.read_text(encoding="utf-8") == "" and summary.skipped == 2


def test_a_failed_write_leaves_the_old_caption_whole_and_no_temp_file(folder, monkeypatch):
    import lora_trainer.ui.captioning as captioning

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(captioning.os, "replace", disk_full)
    summary = caption_folder(str(folder), [BLIP], mode="overwrite")
    assert read(folder / "10_cat" / "b.txt") == "cat, existing tag"
    assert not (folder / "10_cat" / "a.txt").exists()
    assert len(summary.failed) == 3 and "No space left on device" in summary.failed[0][1]
    assert list(folder.rglob("*.tmp")) == []


def test_caption_files_are_written_through_a_temp_file_and_a_rename(folder, monkeypatch):
    import lora_trainer.ui.captioning as captioning

    renames = []
    real = captioning.os.replace
    monkeypatch.setattr(captioning.os, "replace", lambda a, b: (renames.append((a, b)), real(a, b)))
    caption_folder(str(folder), [BLIP], mode="skip")
    assert sorted(str(b.name) for _, b in renames) == ["a.txt", "c.txt"]
    assert all(a.name.startswith(".") and a.name.endswith(".tmp") for a, _ in renames)


@pytest.fixture
def fake_webui_modules(monkeypatch, tmp_path):
    """Just enough of `modules` for WebuiHost's caption-model loading: paths, devices, shared."""
    import sys
    import types

    modules = types.ModuleType("modules")
    modules.paths = types.SimpleNamespace(models_path=str(tmp_path / "models"))
    modules.devices = types.SimpleNamespace(device_interrogate="cpu", torch_gc=lambda: None)
    modules.shared = types.SimpleNamespace(cmd_opts=types.SimpleNamespace(no_half=True), opts=types.SimpleNamespace(
        data={}))
    for name in ("paths", "devices", "shared"):
        monkeypatch.setitem(sys.modules, f"modules.{name}", getattr(modules, name))
    monkeypatch.setitem(sys.modules, "modules", modules)
    return modules


def test_blip_offline_names_the_model_and_where_its_file_goes(fake_webui_modules, tmp_path):
    """Offline the webui's modelloader finds no file and `files[0]` raises: the tab showed 'IndexError: list index
    out of range'."""
    from lora_trainer.ui.captioning import CaptionModelError
    from lora_trainer.ui.webui import WebuiHost

    class Interrogator:
        blip_model = None

        def load_blip_model(self):
            return [][0]

    with pytest.raises(CaptionModelError) as err:
        WebuiHost._load_blip(Interrogator())
    text = str(err.value)
    assert text.startswith("BLIP could not be loaded (IndexError: list index out of range)")
    assert str(tmp_path / "models" / "BLIP" / "model_base_caption_capfilt_large.pth") in text
    assert "storage.googleapis.com" in text and "bert-base-uncased" in text


def test_deepbooru_offline_names_its_file_and_is_not_left_half_loaded(fake_webui_modules, tmp_path):
    import types

    from lora_trainer.ui.captioning import CaptionModelError
    from lora_trainer.ui.webui import WebuiHost

    def start():
        deepbooru.model.model = object()  # load() sets the model before load_state_dict fails
        raise FileNotFoundError("model-resnet_custom_v3.pt")

    deepbooru = types.SimpleNamespace(model=types.SimpleNamespace(model=None, start=start))
    with pytest.raises(CaptionModelError) as err:
        WebuiHost._start_deepbooru(deepbooru)
    assert str(tmp_path / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt") in str(err.value)
    assert deepbooru.model.model is None


def test_the_tab_shows_the_caption_model_error_and_writes_nothing(folder):
    import contextlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from ui_fakes import FakeHost, fake_sd1_model

    from lora_trainer.ui.captioning import CaptionModelError
    from lora_trainer.ui.handlers import Handlers
    from lora_trainer.ui.job import JobRunner

    class OfflineHost(FakeHost):
        @contextlib.contextmanager
        def captioners(self, blip, deepbooru):
            raise CaptionModelError("BLIP", IndexError("list index out of range"), "/w/models/BLIP/x.pth")
            yield []

    handlers = Handlers(JobRunner(OfflineHost(model=fake_sd1_model())))
    message = handlers.caption(str(folder), "", ".txt", True, False, "skip")
    assert "BLIP could not be loaded" in message and "/w/models/BLIP/x.pth" in message
    assert "train-lora-error" in message
    assert sorted(p.name for p in folder.rglob("*.txt")) == ["b.txt"]
