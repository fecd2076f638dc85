"""`python -m lora_trainer demo` and `train --config` work from a fresh checkout, for each architecture."""

from __future__ import annotations

import pytest
from test_train_loop import single_torch_thread  # noqa: F401

from lora_trainer.__main__ import main
from lora_trainer.config import TrainConfig
from lora_trainer.demo import DEMO_ARCHS, demo_config, make_demo_dataset, run_demo
from lora_trainer.lora_file import load_lora


@pytest.mark.parametrize("arch", DEMO_ARCHS)
def test_demo_trains_each_architecture(arch, tmp_path):
    result = run_demo(arch, tmp_path, steps=2)
    assert result.status == "completed", result.message
    assert result.final_file == tmp_path / f"demo-{arch}.safetensors"
    tensors, metadata = load_lora(result.final_file)
    assert tensors and metadata["ss_output_name"] == f"demo-{arch}"
    assert len(list((tmp_path / "demo-data" / "10_demo").glob("*.png"))) == 8


def test_demo_command(tmp_path, capsys):
    """The README's run command (`python -m lora_trainer demo ...` is `__main__.main`)."""
    assert main(["demo", "--arch", "sdxl", "--output", str(tmp_path), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "loss:" in out and (tmp_path / "demo-sdxl.safetensors").is_file()


def test_train_command_from_a_toml_config(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "data", count=2)
    config = demo_config("sd2", data, tmp_path / "ignored", steps=2)
    config.output_name = "from-toml"
    config.save(tmp_path / "run.toml")
    assert TrainConfig.load(tmp_path / "run.toml") == config
    code = main(["train", "--config", str(tmp_path / "run.toml"), "--model", "sd2",
                 "--output-dir", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().out
    assert (tmp_path / "o" / "from-toml.safetensors").is_file()
    (tmp_path / "bad.json").write_text('{"network_dim": -1, "train_dir": "x"}')
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    assert "network_dim" in capsys.readouterr().out
