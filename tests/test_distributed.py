"""Data-parallel training: 2 processes (accelerate, gloo on the CPU) give the weights of one process with 2x
gradient accumulation on the same data, only rank 0 writes, and a state saved by the 2-process run resumes in one
process to the same result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_fixtures import write_tiny_checkpoint
from test_headless_train import headless_config

from lora_trainer.__main__ import main
from lora_trainer.lora_file import load_lora
from lora_trainer.train.distributed import DataParallel, LocalProcess

ROOT = Path(__file__).resolve().parents[1]


def test_each_rank_takes_its_share_of_every_group():
    group = ["b0", "b1", "b2", "b3", "b4"]
    shares = [DataParallel(rank, 2).share(group) for rank in (0, 1)]
    assert shares == [[(0, "b0"), (2, "b2"), (4, "b4")], [(1, "b1"), (3, "b3")]]  # micro index keeps its seed
    assert LocalProcess().share(group) == list(enumerate(group))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(config, path: Path) -> Path:
    path.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    return path


def _assert_same_lora(a: Path, b: Path):
    want, _ = load_lora(a)
    got, _ = load_lora(b)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_two_processes_match_one_with_double_accumulation_and_resume_across(tmp_path):
    pytest.importorskip("accelerate")
    threads = torch.get_num_threads()
    _, checkpoint = write_tiny_checkpoint("sd1", tmp_path / "sd1.safetensors")
    # 8 images, batch 2 -> 4 bucket-pure batches an epoch; 2 of them per optimizer step -> 2 steps an epoch
    config, _ = headless_config(tmp_path, "sd1", steps=4, save_every_n_steps=2, save_state=True)
    per_rank = _write_config(config, tmp_path / "per_rank.json")
    config.gradient_accumulation_steps = 2
    single = _write_config(config, tmp_path / "single.json")

    log = tmp_path / "ranks.jsonl"
    # accelerate 0.21's `--cpu --num_processes N` starts one process; `--multi_gpu` has torchrun start N, and
    # `--device cpu` keeps them on the CPU (gloo).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_free_port()), "-m", "lora_trainer", "train", "--checkpoint", str(checkpoint), "--config",
              str(per_rank), "--device", "cpu", "--output-dir", str(tmp_path / "two"), "--log-json", str(log)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout

    assert main(["train", "--checkpoint", str(checkpoint), "--config", str(single), "--output-dir",
                 str(tmp_path / "one")]) == 0
    name = f"{config.output_name}.safetensors"
    _assert_same_lora(tmp_path / "one" / name, tmp_path / "two" / name)
    _assert_same_lora(tmp_path / "one" / f"{config.output_name}-step00000002.safetensors",
                      tmp_path / "two" / f"{config.output_name}-step00000002.safetensors")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line.get("step") for line in lines if "event" not in line] == [1, 2, 3, 4]  # rank 0 alone logs

    # the 2-process run's step-2 state continues in one process (same global batch) to the same weights
    config.resume_state = str(tmp_path / "two" / f"{config.output_name}-step00000002-state")
    resumed = _write_config(config, tmp_path / "resume.json")
    assert main(["train", "--checkpoint", str(checkpoint), "--config", str(resumed), "--output-dir",
                 str(tmp_path / "resumed")]) == 0
    torch.set_num_threads(threads)
    _assert_same_lora(tmp_path / "one" / name, tmp_path / "resumed" / name)
