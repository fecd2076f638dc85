"""The benchmark's duplicated-weights detector finds a copied model and nothing in an in-place LoRA."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from harness import base_weight_index, duplicated_base_bytes  # noqa: E402


def test_detector_counts_a_deep_copy_and_not_lora_factors():
    base = torch.nn.Sequential(torch.nn.Linear(131, 127), torch.nn.Linear(127, 67))  # shapes no other test uses
    ptrs, shapes = base_weight_index(base)
    lora_down, lora_up = torch.zeros(16, 131), torch.zeros(127, 16)  # LoRA factors never have a base shape
    assert duplicated_base_bytes(ptrs, shapes) == 0
    clone = copy.deepcopy(base)
    expected = sum(p.numel() * 4 for p in clone.parameters() if p.numel() >= 4096)
    assert duplicated_base_bytes(ptrs, shapes) == expected
    del clone, lora_down, lora_up
