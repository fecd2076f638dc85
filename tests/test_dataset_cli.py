"""`python -m lora_trainer dataset`: report text, JSON, exit codes, speed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dataset_fixtures import make_folder, make_mixed_dataset

from lora_trainer.__main__ import main
from lora_trainer.dataset import DatasetOptions, scan_dataset

REPO = Path(__file__).resolve().parents[1]


def test_report_text(tmp_path, capsys):
    make_folder(tmp_path / "img", "10_char", [(64, 64), (96, 64)], captions=["a, b", None])
    make_folder(tmp_path / "reg", "1_person", [(64, 64)] * 2)
    code = main(["dataset", str(tmp_path / "img"), "--reg", str(tmp_path / "reg"), "--batch-size", "2",
                 "--epochs", "3", "--grad-accum", "2"])
    out = capsys.readouterr().out
    assert code == 0
    for words in ["10_char", "1_person", "512x512", "640x384", "20 train samples", "20 reg samples",
                  "3 epochs", "Result: OK"]:
        assert words in out, words
    # 512x512: 10 train + 20 reg = 30 -> 15 batches; 640x384: 10 -> 5; 20 batches, accum 2 -> 10 steps/epoch
    assert "20 batches/epoch" in out and "10 steps/epoch" in out and "30 steps total" in out


def test_json_output_is_the_report_dict(tmp_path, capsys):
    make_folder(tmp_path, "3_x", [(64, 64)], captions=["hello"])
    assert main(["dataset", str(tmp_path), "--json", "--max-steps", "10", "--resolution", "768"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = scan_dataset(tmp_path, options=DatasetOptions(resolution=768, max_steps=10)).report.to_dict()
    assert data == json.loads(json.dumps(expected))
    assert (data["total_steps"], data["epochs"], data["buckets"]) == (10, 4, {"768x768": 3})
    assert data["folders"][0]["captions_found"] == 1 and data["ok"] is True


def test_nothing_trainable_exits_nonzero_with_fix(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    assert main(["dataset", str(tmp_path / "img")]) == 1
    out = capsys.readouterr().out
    assert "NOTHING TO TRAIN" in out and "subfolder named like 10_mychar" in out


def test_bad_option_exits_2(tmp_path, capsys):
    assert main(["dataset", str(tmp_path), "--resolution", "1024", "--max-bucket", "512"]) == 2
    assert "max_bucket_reso" in capsys.readouterr().err


def test_30_mixed_images_scan_well_under_a_second(tmp_path):
    make_mixed_dataset(tmp_path / "data", 30)
    start = time.perf_counter()
    report = scan_dataset(tmp_path / "data").report
    elapsed = time.perf_counter() - start
    assert report.ok and report.num_train_images == 15 * 10 + 15 * 5 and not report.skipped
    assert elapsed < 0.5, f"scan took {elapsed:.2f}s"


def test_command_line_process(tmp_path):
    """`python -m lora_trainer dataset` in a fresh interpreter; the dataset command itself never imports torch."""
    make_mixed_dataset(tmp_path / "data", 30)
    proc = subprocess.run([sys.executable, "-m", "lora_trainer", "dataset", str(tmp_path / "data")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "10_alice" in proc.stdout and "Result: OK" in proc.stdout
    code = ("import argparse, sys; from lora_trainer.cli import dataset_cmd; p = argparse.ArgumentParser();"
            "dataset_cmd.add_arguments(p); rc = dataset_cmd.run(p.parse_args(sys.argv[1:]));"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data"), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
