"""Ctrl+C in a real process: the webui's SIGINT handler ends it with os._exit(0), so only a handler installed over
it can save; the partial LoRA must be on disk, complete, with no temporary file, before the process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.lora_file import load_lora


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_during_training_saves_the_partial_lora_before_the_process_ends(tmp_path):
    child = Path(__file__).with_name("shutdown_child.py")
    proc = subprocess.Popen([sys.executable, str(child), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("STEP ") and int(line.split()[1]) >= 3 and "Caching" not in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "saving 'hero' first" in output and "Interrupted with signal 2" in output  # ours, then the webui's
    files = sorted((tmp_path / "lora").glob("*.safetensors"))
    assert [f.name for f in files] == ["hero.safetensors"], output
    assert int(load_lora(files[0])[1]["ss_steps"]) >= 3
    assert list((tmp_path / "lora").glob("*.tmp")) == []
