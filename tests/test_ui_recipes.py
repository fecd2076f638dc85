"""The Recipe dropdown: at the top of the Training section, it fills the form and says what it set and why;
Prodigy with a learning rate far from 1.0 gets a warning when the run starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from lora_trainer.recipes import get_recipe, recipe_names  # noqa: E402
from lora_trainer.ui import form  # noqa: E402
from lora_trainer.ui.handlers import Handlers  # noqa: E402
from lora_trainer.ui.job import JobRunner  # noqa: E402
from lora_trainer.ui.tab import build_tab  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_job import FakeTrain  # noqa: E402
from ui_fakes import FakeHost, fake_sd1_model, make_dataset  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    host = FakeHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    runner = JobRunner(host, train_fn=FakeTrain(host))
    return host, runner, Handlers(runner), tmp_path


def test_the_recipe_dropdown_sits_at_the_top_of_the_training_section(setup):
    _, runner, _, _ = setup
    config = build_tab(runner).get_config_file()
    ids = [c.get("props", {}).get("elem_id") for c in config["components"]]
    recipe = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "train_lora_recipe")
    assert [choice[0] if isinstance(choice, (list, tuple)) else choice
            for choice in recipe["props"]["choices"]] == recipe_names()
    first_training = next(f.key for f in form.FIELDS if f.section == "training")
    assert ids.index("train_lora_section_training") < ids.index("train_lora_recipe") < \
        ids.index(f"train_lora_{first_training}")


def test_choosing_a_recipe_fills_the_form_and_explains(setup):
    _, _, handlers, tmp_path = setup
    values = form.default_values()
    values.update(train_dir=str(tmp_path), network_dim=64, output_name="mine")
    note, *filled = handlers.apply_recipe("SDXL pivotal", *[values[f.key] for f in form.FIELDS])
    by_key = dict(zip([f.key for f in form.FIELDS], filled))
    assert by_key["optimizer"] == "Prodigy" and by_key["pivotal_tuning"] is True and by_key["network_dim"] == 8
    assert by_key["output_name"] == "mine" and by_key["train_dir"] == str(tmp_path)  # not named: kept
    assert "Made for SDXL" in note  # the fake host has an SD1 model loaded
    assert get_recipe("SDXL pivotal").why["pivotal_frac"] in note
    error, *unchanged = handlers.apply_recipe("nope", *[values[f.key] for f in form.FIELDS])
    assert "unknown recipe" in error


def test_prodigy_with_a_small_lr_warns_at_start(setup):
    _, _, handlers, tmp_path = setup
    data = make_dataset(tmp_path / "data")
    values = form.default_values(output_dir=str(tmp_path / "out"))
    values.update(train_dir=str(data), optimizer="Prodigy", unet_lr=1e-4, text_encoder_lr=1e-4)
    notice, _, status, task_id, _ = handlers.start(*[values[f.key] for f in form.FIELDS])
    assert task_id and "far from 1.0" in notice and "estimates the step size itself" in notice


def test_a_pivotal_job_gets_the_hosts_embeddings_folder_reloads_it_and_sends_the_token(tmp_path):
    from lora_trainer.ui import panels

    class EmbeddingsHost(FakeHost):
        reloads = 0

        def embeddings_dir(self):
            return str(tmp_path / "embeddings")

        def reload_embeddings(self):
            EmbeddingsHost.reloads += 1

    host = EmbeddingsHost(model=fake_sd1_model(), lora_dir=str(tmp_path / "Lora"))
    runner = JobRunner(host, train_fn=FakeTrain(host))
    values = form.default_values(output_dir=str(tmp_path / "out"))
    values.update(train_dir=str(make_dataset(tmp_path / "data")), pivotal_tuning=True, pivotal_token="zkw")
    job = runner.start(form.values_to_config(values))
    job.done.wait(20)
    assert job.config.pivotal_embeddings_dir == str(tmp_path / "embeddings")
    assert EmbeddingsHost.reloads == 1
    assert panels.send_to_txt2img_text(job.snapshot(), 0.8) == f"<lora:{job.config.output_name}:0.8>, zkw"


def test_clearing_the_recipe_changes_nothing(setup):
    _, _, handlers, _ = setup
    values = form.default_values()
    note, *updates = handlers.apply_recipe(None, *[values[f.key] for f in form.FIELDS])
    assert note == "" and all(u == gr.update() for u in updates)
