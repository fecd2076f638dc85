"""Training previews: kohya prompt options, base-vs-LoRA sheets, multiplier and RNG restored."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from lora_trainer.config import TrainConfig
from lora_trainer.ui.job import TrainingJob
from lora_trainer.ui.previews import PreviewMaker, parse_prompt_line, side_by_side

sys.path.insert(0, str(Path(__file__).parent))
from ui_fakes import FakeHost  # noqa: E402


def test_parse_prompt_line_reads_kohya_options():
    p = parse_prompt_line("a hero, red cape --n blurry, lowres --w 512 --h 768 --s 25 --l 6.5 --d 99")
    assert (p.prompt, p.negative_prompt) == ("a hero, red cape", "blurry, lowres")
    assert (p.width, p.height, p.steps, p.cfg_scale, p.seed) == (512, 768, 25, 6.5, 99)
    plain = parse_prompt_line("just a prompt")
    assert plain.prompt == "just a prompt" and plain.width is None and plain.seed is None
    assert parse_prompt_line("x --w wide").width is None  # a bad value keeps the default


def test_side_by_side_is_one_row_with_a_label_strip():
    from PIL import Image

    sheet = side_by_side([Image.new("RGB", (512, 768)), Image.new("RGB", (512, 768))], ["base", "LoRA 1"])
    assert sheet.size == (1024, 768 + 20)
    small = side_by_side([Image.new("RGB", (64, 64))] * 3, ["base", "LoRA 0.5", "LoRA 1"])
    assert small.size == (3 * 256, 256 + 20)  # tiny previews are enlarged to stay readable


def make_job(tmp_path, **kw):
    config = TrainConfig(train_dir=str(tmp_path), output_dir=str(tmp_path / "out"), output_name="hero",
                         resolution=64, sample_seed=7, **kw)
    return TrainingJob(config, "task(x)", "tiny", "sd1")


def test_preview_renders_each_weight_with_the_same_seed_and_restores_state(tmp_path):
    host = FakeHost()
    job = make_job(tmp_path, sample_prompts=["a hero --d 3", "a hero at night"], sample_weights=[0.0, 0.5, 1.0])
    network = types.SimpleNamespace(multiplier=1.0)
    seen = []
    host_txt2img = host.txt2img
    host.txt2img = lambda *a, **k: (seen.append(network.multiplier), host_txt2img(*a, **k))[1]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    paths = PreviewMaker(host, job)(step=10, epoch=1, network=network, adapter=None)
    assert torch.rand(1) == expected_next  # previews do not disturb the training's random stream
    assert seen == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]
    assert network.multiplier == 1.0
    assert [s for _, s, _, _ in host.images] == [3, 3, 3, 7, 7, 7]
    assert {(w, h) for _, _, w, h in host.images} == {(64, 64)}
    assert [Path(p).name for p in paths] == ["hero-step000010-0.png", "hero-step000010-1.png"]
    assert all(Path(p).parent == tmp_path / "out" / "hero-previews" for p in paths)
    assert job.previews == paths


def test_trigger_word_is_the_prompt_when_none_is_given(tmp_path):
    host = FakeHost()
    job = make_job(tmp_path, trigger_word="zzhero")
    PreviewMaker(host, job)(1, 1, types.SimpleNamespace(multiplier=1.0))
    assert {p for p, *_ in host.images} == {"zzhero"}


def test_no_prompt_and_no_txt2img_skip_quietly(tmp_path):
    job = make_job(tmp_path)
    assert PreviewMaker(FakeHost(), job)(1, 1, types.SimpleNamespace(multiplier=1.0)) == []
    job = make_job(tmp_path, sample_prompts=["x"])
    bare = FakeHost()
    bare.txt2img = lambda *a, **k: None
    network = types.SimpleNamespace(multiplier=0.7)
    assert PreviewMaker(bare, job)(1, 1, network) == []
    assert network.multiplier == 0.7
    assert any("not available" in line for line in job.log)
