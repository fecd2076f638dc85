"""Resume from a saved training state continues to the same weights as an uninterrupted run; starting from an
existing LoRA; kohya's save cadence and file names."""

from __future__ import annotations

import torch
from conftest import tiny_model
from test_train_loop import make_config, single_torch_thread  # noqa: F401

from lora_trainer.lora_file import load_lora
from lora_trainer.train import train
from lora_trainer.train.saving import planned_files

# Exercise every random stream and piece of optimizer state a resume must carry over.
RESUME_SETTINGS = dict(steps=6, train_batch_size=1, gradient_accumulation_steps=2, flip_aug=True,
                       shuffle_caption=True, caption_tag_dropout_rate=0.2, network_dropout=0.1, noise_offset=0.05,
                       lr_scheduler="cosine", lr_warmup_steps=2, save_every_n_steps=3, save_state=True)


def test_resume_reaches_the_uninterrupted_weights(tmp_path):
    model = tiny_model("sd1")
    full = train(model, make_config(tmp_path / "full", "sd1", **RESUME_SETTINGS))
    assert full.status == "completed", full.message
    assert [f.name for f in full.files] == ["demo-sd1-step00000003.safetensors", "demo-sd1.safetensors"]
    state = full.files[0].with_name("demo-sd1-step00000003-state")
    assert state in full.state_dirs and (state / "train_state.json").is_file()
    assert {p.name for p in state.iterdir()} == {"network.safetensors", "optimizer.safetensors", "train_state.json"}

    resumed = train(model, make_config(tmp_path / "resumed", "sd1", resume_state=str(state), **RESUME_SETTINGS))
    assert resumed.status == "completed", resumed.message
    assert resumed.steps_done == 6 and len(resumed.loss_history) == 3
    assert resumed.loss_history == full.loss_history[3:]
    expected, _ = load_lora(full.final_file)
    got, _ = load_lora(resumed.final_file)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_resume_that_is_already_finished_is_refused(tmp_path):
    model = tiny_model("sd1")
    first = train(model, make_config(tmp_path / "a", "sd1", steps=2, save_state=True))
    state = first.final_file.with_name("demo-sd1-state")
    again = train(model, make_config(tmp_path / "b", "sd1", steps=2, resume_state=str(state)))
    assert again.status == "error" and again.message.startswith("resume_state") and "raise" in again.message
    bad = train(model, make_config(tmp_path / "c", "sd1", steps=2, resume_state=str(tmp_path)))
    assert bad.status == "error" and "not a training state folder" in bad.message


def test_start_from_an_existing_lora(tmp_path):
    model = tiny_model("sd1")
    first = train(model, make_config(tmp_path / "a", "sd1", steps=3))
    start, _ = load_lora(first.final_file)
    cont = train(model, make_config(tmp_path / "b", "sd1", steps=1, unet_lr=1e-12, text_encoder_lr=1e-12,
                                    network_weights=str(first.final_file)))
    assert cont.status == "completed", cont.message
    got, _ = load_lora(cont.final_file)
    for key in start:  # a negligible lr: the file it started from comes back
        torch.testing.assert_close(got[key], start[key], rtol=1e-4, atol=1e-6, msg=key)


def test_save_cadence_names_and_overwrite_protection(tmp_path):
    model = tiny_model("sd1")
    # 4 images x 2 repeats / batch 2 = 4 steps per epoch; 2 epochs; every epoch and every 3 steps
    config = make_config(tmp_path, "sd1", steps=0, max_train_epochs=2, train_batch_size=2, repeats=2,
                         save_every_n_epochs=1, save_every_n_steps=3)
    planned = planned_files(tmp_path / "out", "demo-sd1", steps_per_epoch=4, total_steps=8, epochs=2,
                            every_n_epochs=1, every_n_steps=3)
    assert [p.name for p in planned] == ["demo-sd1-step00000003.safetensors", "demo-sd1-000001.safetensors",
                                         "demo-sd1-step00000006.safetensors", "demo-sd1.safetensors"]
    result = train(model, config)
    assert result.status == "completed", result.message
    assert result.files == planned and result.steps_done == 8
    metas = [load_lora(f)[1] for f in result.files]
    assert [(m["ss_epoch"], m["ss_steps"]) for m in metas] == [("1", "3"), ("1", "4"), ("2", "6"), ("2", "8")]
    assert len({m["ss_session_id"] for m in metas}) == 1
    assert [m["ss_output_name"] for m in metas] == [f.stem for f in result.files]
    config.overwrite = False
    refused = train(model, config)
    assert refused.status == "error" and "already exists" in refused.message and refused.message.startswith("output")
