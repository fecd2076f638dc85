"""LatentCache with a tiny deterministic "VAE" (8× average pool + a fixed 3->4 channel map) that counts calls."""

from __future__ import annotations

import os
import time

import pytest
import torch
from dataset_fixtures import make_folder, save_image, truncate

from lora_trainer.dataset import DatasetOptions, scan_dataset
from lora_trainer.dataset.images import load_image
from lora_trainer.dataset.latent_cache import LatentCache, default_cache_dir

MIX = torch.tensor([[0.5, 0.2, 0.1], [0.1, 0.6, 0.2], [0.3, 0.3, 0.3], [-0.2, 0.1, 0.4]])


class CountingVAE:
    def __init__(self):
        self.calls = 0
        self.images = 0
        self.batch_shapes = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        assert batch.dim() == 4 and batch.shape[1] == 3 and batch.dtype == torch.float32
        self.calls += 1
        self.images += batch.shape[0]
        self.batch_shapes.append(tuple(batch.shape))
        pooled = torch.nn.functional.avg_pool2d(batch, 8)
        return torch.einsum("oc,bchw->bohw", MIX, pooled)


def expected_latent(item, flip):
    tensor, _ = load_image(item, flip=flip)
    return CountingVAE()(tensor[None])[0]


@pytest.fixture
def dataset(tmp_path):
    # 3 square (512x512 bucket) + 2 wide (640x384) images
    make_folder(tmp_path / "img", "2_sq", [(64, 64)] * 3)
    make_folder(tmp_path / "img", "1_wide", [(96, 64)] * 2)
    return tmp_path / "img"


def test_memory_cache_prepares_per_bucket_and_get_never_encodes(dataset):
    items = scan_dataset(dataset).items
    vae = CountingVAE()
    cache = LatentCache(vae, "vae-a", cache_dir=None, batch_size=2)
    assert cache.prepare(items, flip_aug=False) == []
    assert vae.images == 5
    assert sorted(vae.batch_shapes) == sorted([(2, 3, 512, 512), (1, 3, 512, 512), (2, 3, 384, 640)])
    cache.release_encoder()
    for item in items:
        latent = cache.get(item)
        w, h = item.bucket
        assert latent.shape == (4, h // 8, w // 8) and latent.dtype == torch.float32
        assert torch.allclose(latent, expected_latent(item, False), atol=1e-6)
    assert vae.images == 5
    assert not default_cache_dir(dataset).exists()  # memory mode writes nothing


def test_flip_entries(dataset):
    items = scan_dataset(dataset).items
    vae = CountingVAE()
    cache = LatentCache(vae, "vae-a")
    progress = []
    cache.prepare(items, flip_aug=True, progress_cb=lambda done, total: progress.append((done, total)))
    assert vae.images == 10 and progress[-1] == (10, 10)
    calls = vae.calls
    for item in items:
        assert torch.allclose(cache.get(item, flip=True), expected_latent(item, True), atol=1e-6)
        assert not torch.allclose(cache.get(item, flip=True), cache.get(item, flip=False))
    assert vae.calls == calls


def test_disk_cache_survives_a_new_run_without_the_vae(dataset):
    items = scan_dataset(dataset).items
    cache_dir = default_cache_dir(dataset)
    LatentCache(CountingVAE(), "vae-a", cache_dir).prepare(items, flip_aug=True)
    files = sorted(cache_dir.iterdir())
    assert len(files) == 10 and all(f.suffix == ".npz" for f in files)  # no leftover temp files
    # Next run: nothing to encode, no VAE needed at all.
    rerun = scan_dataset(dataset)
    assert not rerun.report.skipped  # the cache folder is not dataset content
    cache = LatentCache(None, "vae-a", cache_dir)
    assert cache.prepare(rerun.items, flip_aug=True) == []
    for item in rerun.items:
        assert torch.allclose(cache.get(item, True), expected_latent(item, True), atol=1e-6)


def test_changed_image_resolution_or_vae_invalidates(dataset):
    cache_dir = default_cache_dir(dataset)
    items = scan_dataset(dataset).items
    LatentCache(CountingVAE(), "vae-a", cache_dir).prepare(items, flip_aug=False)

    # Same everything: all hits.
    vae = CountingVAE()
    LatentCache(vae, "vae-a", cache_dir).prepare(scan_dataset(dataset).items, flip_aug=False)
    assert vae.images == 0

    # One image changed on disk -> only it is re-encoded, with the new pixels.
    changed = items[0].path
    save_image(changed, (64, 64), seed=99)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000))
    vae = CountingVAE()
    cache = LatentCache(vae, "vae-a", cache_dir)
    fresh = scan_dataset(dataset).items
    cache.prepare(fresh, flip_aug=False)
    assert vae.images == 1
    item = next(i for i in fresh if i.path == changed)
    assert torch.allclose(cache.get(item), expected_latent(item, False), atol=1e-6)

    # Other resolution (other buckets) -> everything re-encoded.
    vae = CountingVAE()
    LatentCache(vae, "vae-a", cache_dir).prepare(scan_dataset(dataset, options=DatasetOptions(resolution=256)).items,
                                                 flip_aug=False)
    assert vae.images == 5

    # Other VAE -> everything re-encoded.
    vae = CountingVAE()
    LatentCache(vae, "vae-b", cache_dir).prepare(items, flip_aug=False)
    assert vae.images == 5


def test_get_before_prepare_encodes_once(dataset):
    item = scan_dataset(dataset).items[0]
    vae = CountingVAE()
    cache = LatentCache(vae, "vae-a")
    first = cache.get(item)
    assert cache.get(item) is first and vae.calls == 1


def test_unreadable_image_is_returned_not_raised(dataset):
    items = scan_dataset(dataset).items
    truncate(items[0].path, 0.3)
    vae = CountingVAE()
    cache = LatentCache(vae, "vae-a", default_cache_dir(dataset))
    failures = cache.prepare(items, flip_aug=True)
    assert [f[0] for f in failures] == [items[0]] and "truncated" in failures[0][1].lower()
    assert vae.images == 8


def test_random_crop_refused_and_fingerprint_required(dataset):
    items = scan_dataset(dataset, options=DatasetOptions(random_crop=True)).items
    with pytest.raises(ValueError, match="random_crop"):
        LatentCache(CountingVAE(), "vae-a").prepare(items, flip_aug=False)
    with pytest.raises(ValueError, match="vae_fingerprint"):
        LatentCache(CountingVAE(), "")


def test_missing_entry_after_release_is_a_dataset_error(dataset):
    from lora_trainer.dataset import DatasetError

    item = scan_dataset(dataset).items[0]
    cache = LatentCache(None, "vae-a")
    with pytest.raises(DatasetError, match="VAE was released"):
        cache.get(item)


def test_prepare_is_quick_on_hits(dataset):
    items = scan_dataset(dataset).items
    cache_dir = default_cache_dir(dataset)
    LatentCache(CountingVAE(), "vae-a", cache_dir).prepare(items, flip_aug=False)
    start = time.perf_counter()
    LatentCache(None, "vae-a", cache_dir).prepare(items, flip_aug=False)
    assert time.perf_counter() - start < 1.0
