"""`python -m lora_trainer train --checkpoint FILE`: a tiny SD1 / SD2-v / SDXL checkpoint file trains to the same
LoRA as the in-memory model it was written from, with the same seed; --log-json writes one line per step."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoint_fixtures import write_tiny_checkpoint

from lora_trainer.__main__ import main
from lora_trainer.demo import demo_config, make_demo_dataset
from lora_trainer.lora_file import load_lora
from lora_trainer.train import train


def headless_config(tmp_path, arch, steps=3, **overrides):
    data = make_demo_dataset(tmp_path / "data", count=4, repeats=2)
    config = demo_config(arch, data, tmp_path / "out", steps=steps)
    config.save_precision = "fp32"
    for key, value in overrides.items():
        setattr(config, key, value)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    return config, path


@pytest.mark.parametrize("arch", ["sd1", "sd2v", "sdxl"])
def test_checkpoint_file_trains_to_the_in_memory_lora(tmp_path, arch):
    threads = torch.get_num_threads()
    model, checkpoint = write_tiny_checkpoint(arch, tmp_path / f"{arch}.safetensors")
    config, config_file = headless_config(tmp_path, arch)
    config.output_dir = str(tmp_path / "memory")
    expected = train(model, config)
    assert expected.ok, expected.message
    log = tmp_path / "log.jsonl"
    code = main(["train", "--checkpoint", str(checkpoint), "--config", str(config_file), "--output-dir",
                 str(tmp_path / "cli"), "--log-json", str(log)])
    torch.set_num_threads(threads)
    assert code == 0
    want, _ = load_lora(expected.final_file)
    got, metadata = load_lora(tmp_path / "cli" / expected.final_file.name)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    assert metadata["modelspec.prediction_type"] == ("v" if arch == "sd2v" else "epsilon")  # v found in the file
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [line for line in lines if "step" in line and "event" not in line]
    assert [line["step"] for line in steps] == [1, 2, 3]
    assert all(isinstance(line["loss"], float) and line["lr"] == config.unet_lr for line in steps)
    assert lines[-1]["event"] == "done" and lines[-1]["status"] == "completed"


def test_a_lora_given_as_checkpoint_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    _, config_file = headless_config(tmp_path, "sd1")
    assert main(["train", "--checkpoint", str(lora), "--config", str(config_file)]) == 2
    out = capsys.readouterr().out
    assert "style.safetensors" in out and "LoRA file" in out
