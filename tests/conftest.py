"""Shared fixtures: tiny real-class SD models, built once per session (a model is never mutated by a test
that shares it without restoring it; tests that need a private copy call build_tiny_model themselves)."""

from __future__ import annotations

import pytest
import torch

from lora_trainer.testing import TINY_ARCHS, build_tiny_model

# One thread: the tiny models gain nothing from two, and OpenMP threads spin against any other busy process on a
# 2-core machine (5-10x slowdowns were measured). Also makes results independent of the core count.
torch.set_num_threads(1)

_cache: dict = {}


def tiny_model(arch: str):
    if arch not in _cache:
        _cache[arch] = build_tiny_model(arch)
    return _cache[arch]


@pytest.fixture(params=TINY_ARCHS)
def any_tiny_model(request):
    return request.param, tiny_model(request.param)
