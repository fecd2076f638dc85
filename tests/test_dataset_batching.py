"""Bucket-pure batches and kohya's step arithmetic (reference §3.6, §4.4)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from lora_trainer.dataset.batching import BucketBatchSampler, compute_steps, count_batches


@dataclass(eq=False)
class Item:
    name: str
    bucket: tuple
    repeats: int


ITEMS = [Item("a", (512, 512), 3), Item("b", (512, 512), 2), Item("c", (640, 384), 4), Item("d", (384, 640), 1)]


# (batches_per_epoch, grad_accum, epochs, max_steps) -> (steps_per_epoch, total_steps, epochs), from kohya:
# steps/epoch = ceil(batches / accum); epochs given -> total = epochs × steps/epoch; else total = max_steps
# (default 1600) and epochs = ceil(total / steps/epoch).
STEP_TABLE = [
    ((100, 1, 10, None), (100, 1000, 10)),
    ((50, 4, 10, None), (13, 130, 10)),
    ((50, 1, None, None), (50, 1600, 32)),
    ((50, 1, None, 1000), (50, 1000, 20)),
    ((50, 1, None, 1001), (50, 1001, 21)),
    ((7, 2, 3, 500), (4, 12, 3)),  # epochs win over max_steps
    ((3, 8, None, 10), (1, 10, 10)),
    ((0, 1, 10, None), (0, 0, 0)),
]


@pytest.mark.parametrize("args, expected", STEP_TABLE)
def test_compute_steps(args, expected):
    assert compute_steps(*args) == expected


def test_count_batches_has_one_partial_batch_per_bucket():
    assert count_batches([5, 4, 1], 2) == 3 + 2 + 1
    assert count_batches([], 4) == 0


def test_batches_never_mix_buckets_and_cover_every_repeat():
    sampler = BucketBatchSampler(ITEMS, batch_size=2, seed=0)
    # 512x512: 5 samples -> 3 batches, 640x384: 4 -> 2, 384x640: 1 -> 1
    assert sampler.batches_per_epoch == len(sampler) == 6
    for epoch in range(3):
        batches = sampler.epoch_batches(epoch)
        assert len(batches) == 6
        assert all(len({i.bucket for i in b}) == 1 and 1 <= len(b) <= 2 for b in batches)
        assert Counter(i.name for b in batches for i in b) == {"a": 3, "b": 2, "c": 4, "d": 1}


def test_epochs_are_deterministic_and_differ():
    items = [Item(str(i), (512, 512), 1) for i in range(12)] + [Item(f"w{i}", (640, 384), 1) for i in range(6)]

    def names(sampler, epoch):
        return [[i.name for i in b] for b in sampler.epoch_batches(epoch)]

    a, b = BucketBatchSampler(items, 3, seed=42), BucketBatchSampler(list(reversed(items)), 3, seed=42)
    assert names(a, 1) == names(a, 1)
    assert names(a, 1) != names(a, 2)
    assert sorted(map(sorted, names(a, 1))) != sorted(map(sorted, names(a, 2)))  # composition changes too
    assert sorted(sum(names(a, 1), [])) == sorted(sum(names(b, 1), []))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(ITEMS, 0)
