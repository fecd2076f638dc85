"""Clip skip 0 = the webui's Clip skip setting when the job starts (SD1), shown beside the model line; an explicit
value overrides; the engine resolves 0 to 1 without a webui; the resolved value is what the adapter encodes at."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.ui import panels
from lora_trainer.ui.clip_skip import resolve_clip_skip
from lora_trainer.ui.host import Host


class SkipHost(Host):
    def __init__(self, skip, model=None):
        self.skip, self._model = skip, model

    def clip_skip(self):
        return self.skip

    def model(self):
        return self._model

    def model_title(self):
        return "anime.safetensors"


def test_default_follows_the_webui_setting_and_an_override_wins():
    assert TrainConfig().clip_skip == 0 and Host().clip_skip() == 1
    config = TrainConfig(train_dir="x")
    assert resolve_clip_skip(SkipHost(2), config, "sd1") == 2 and config.clip_skip == 2
    explicit = TrainConfig(train_dir="x", clip_skip=1)
    assert resolve_clip_skip(SkipHost(2), explicit, "sd1") == 1
    sdxl = TrainConfig(train_dir="x")
    assert resolve_clip_skip(SkipHost(2), sdxl, "sdxl") == 1  # the webui ignores it for SDXL by default


def test_the_tab_shows_the_webui_clip_skip_next_to_the_model():
    text = panels.model_markdown(SkipHost(2, tiny_model("sd1")))
    assert "anime.safetensors" in text and "Clip skip 2** (webui setting)" in text
    assert "does not apply to SDXL" in panels.model_markdown(SkipHost(2, tiny_model("sdxl")))


def test_the_job_resolves_clip_skip_when_it_starts_and_the_engine_gets_the_number(tmp_path):
    from test_ui_job import FakeTrain, make_config, wait
    from ui_fakes import FakeHost, fake_sd1_model

    from lora_trainer.ui.job import JobRunner

    class Host2(FakeHost):
        def clip_skip(self):
            return 2

    host = Host2(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    seen = []
    fake = FakeTrain(host)

    def train_fn(model, config, **kw):
        seen.append(config.clip_skip)
        return fake(model, config, **kw)

    job = JobRunner(host, train_fn=train_fn).start(make_config(tmp_path))
    wait(job)
    assert job.state == "completed", job.message
    assert seen == [2] and any("clip skip 2" in line for line in job.log)


@torch.no_grad()
def test_resolved_clip_skip_changes_the_sd1_conditioning():
    adapter = get_adapter(tiny_model("sd1"))
    one, two = (adapter.encode_text(["a photo of a cat"], clip_skip=k).context for k in (1, 2))
    assert not torch.allclose(one, two)
    torch.testing.assert_close(adapter.encode_text(["a photo of a cat"], clip_skip=0).context, one)


def test_max_token_length_is_validated():
    TrainConfig(train_dir="x", max_token_length=150).validate()
    with pytest.raises(ConfigError, match="max_token_length"):
        TrainConfig(train_dir="x", max_token_length=100).validate()


def test_clip_skip_is_validated():
    with pytest.raises(ConfigError, match="clip_skip"):
        TrainConfig(train_dir="x", clip_skip=13).validate()
