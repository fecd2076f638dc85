"""Bucket-pure batches and kohya's step arithmetic (reference §3.6, §4.4)."""

from __future__ import annotations

import math
import random
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .options import KOHYA_DEFAULT_MAX_STEPS


def count_batches(bucket_counts: Iterable[int], batch_size: int) -> int:
    """Batches per epoch: buckets are never mixed, so each bucket ends with its own partial batch."""
    return sum(math.ceil(n / batch_size) for n in bucket_counts)


def compute_steps(batches_per_epoch: int, grad_accum: int, epochs: Optional[int] = None,
                  max_steps: Optional[int] = None) -> Tuple[int, int, int]:
    """(steps_per_epoch, total_steps, epochs) as kohya's train_network computes them (one process).

    A step is one optimizer update. Epochs, when given, win over max_steps; with neither, kohya's default of
    1600 steps applies. Training stops at total_steps, possibly in the middle of the last epoch.
    """
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum) if batches_per_epoch > 0 else 0
    if steps_per_epoch == 0:
        return 0, 0, 0
    if epochs is not None:
        return steps_per_epoch, epochs * steps_per_epoch, epochs
    total = KOHYA_DEFAULT_MAX_STEPS if max_steps is None else max_steps
    return steps_per_epoch, total, math.ceil(total / steps_per_epoch)


class BucketBatchSampler:
    """Groups samples by bucket so every tensor in a batch has one size.

    `items_with_repeats`: the dataset's ImageItems (anything with `.bucket` and `.repeats`); each appears
    `item.repeats` times per epoch — pass each item once, not an already-expanded list.
    Each epoch, with random.Random(seed + epoch), every bucket's sample list is shuffled, cut into batches,
    and the batch order is shuffled (kohya's scheme), so batch composition changes between epochs but a given
    (seed, epoch) always gives the same batches.
    """

    def __init__(self, items_with_repeats: Sequence, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be >= 1")
        self.batch_size = batch_size
        self.seed = seed
        self.buckets: Dict[Tuple[int, int], list] = {}
        for item in items_with_repeats:
            self.buckets.setdefault(tuple(item.bucket), []).extend([item] * int(item.repeats))
        self.buckets = dict(sorted(self.buckets.items()))  # fixed order, so shuffles depend only on the seed

    @property
    def batches_per_epoch(self) -> int:
        return count_batches((len(v) for v in self.buckets.values()), self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def bucket_counts(self) -> Dict[Tuple[int, int], int]:
        return {bucket: len(samples) for bucket, samples in self.buckets.items()}

    def epoch_batches(self, epoch: int) -> List[list]:
        rng = random.Random(self.seed + epoch)
        batches: List[list] = []
        for samples in self.buckets.values():
            order = list(samples)
            rng.shuffle(order)
            batches += [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        return batches
