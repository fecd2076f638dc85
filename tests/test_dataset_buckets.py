"""Bucket list and bucket assignment against numbers worked out by hand from kohya's formulas (reference §4)."""

from __future__ import annotations

import pytest

from lora_trainer.dataset.buckets import (
    Bucketer,
    cover_size,
    make_bucket_resolutions,
    select_bucket,
    select_bucket_no_upscale,
)
from lora_trainer.dataset.options import DatasetOptions

# Reference §4.1 worked example, written out: 512x512, sides 256..1024, step 64.
BUCKETS_512 = [(256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
               (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256),
               (1024, 256)]

# 768x768 with the default max side 1024 (area 589824): height = min(1024, (589824 // w) // 64 * 64) per width.
BUCKETS_768 = [(256, 1024), (320, 1024), (384, 1024), (448, 1024), (512, 1024), (576, 960), (576, 1024), (640, 896),
               (704, 832), (768, 768), (832, 704), (896, 640), (960, 576), (1024, 256), (1024, 320), (1024, 384),
               (1024, 448), (1024, 512), (1024, 576)]


def test_bucket_list_512_matches_reference_example():
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == BUCKETS_512


def test_bucket_list_768_default_max():
    assert make_bucket_resolutions((768, 768), 256, 1024, 64) == BUCKETS_768


def test_bucket_list_sdxl_2048_has_41_buckets():
    buckets = make_bucket_resolutions((1024, 1024), 256, 2048, 64)
    assert len(buckets) == 41
    for b in [(832, 1216), (896, 1152), (960, 1088), (1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640)]:
        assert b in buckets
    assert all(w * h <= 1024 * 1024 and max(w, h) <= 2048 for w, h in buckets)


# (image w, h) -> (bucket, resized, ar_error), all from the formulas: nearest bucket ratio, then cover-scale.
SELECT_CASES = [
    ((512, 512), (512, 512), (512, 512), 0.0),
    ((1000, 500), (704, 320), (704, 352), 704 / 320 - 2.0),  # 2.2 beats 1.667; narrower -> match widths
    ((300, 1200), (256, 1024), (256, 1024), 0.0),  # exact ratio 0.25
    ((640, 480), (576, 448), (597, 448), 576 / 448 - 640 / 480),  # wider than 1.2857 -> match heights
    ((704, 320), (704, 320), (704, 320), 0.0),  # exactly a bucket
    ((64, 64), (512, 512), (512, 512), 0.0),  # upscaled
    ((2048, 1536), (576, 448), (597, 448), 576 / 448 - 2048 / 1536),
    ((600, 400), (640, 384), (640, 427), 640 / 384 - 1.5),  # 1.5: 1.667 (0.167) beats 1.2857 (0.214)
]


@pytest.mark.parametrize("size, bucket, resized, ar_error", SELECT_CASES)
def test_select_bucket(size, bucket, resized, ar_error):
    got_bucket, got_resized, got_error = select_bucket(*size, BUCKETS_512)
    assert got_bucket == bucket
    assert got_resized == resized
    assert got_error == pytest.approx(ar_error)
    assert got_resized[0] >= bucket[0] and got_resized[1] >= bucket[1]


# bucket_no_upscale with max area 512*512, step 64 (reference §4.2, worked by hand).
NO_UPSCALE_CASES = [
    ((2000, 1000), (640, 320), (640, 320), 0.0),  # width-first gives 2.2, height-first 2.0 -> height-first
    ((1000, 700), (576, 384), (576, 403), 576 / 384 - 1000 / 700),  # width-first 1.5 beats 1.333
    ((1024, 1024), (512, 512), (512, 512), 0.0),
    ((300, 200), (256, 192), (300, 200), 256 / 192 - 1.5),  # small: not resized, floored to the step
]


@pytest.mark.parametrize("size, bucket, resized, ar_error", NO_UPSCALE_CASES)
def test_select_bucket_no_upscale(size, bucket, resized, ar_error):
    got = select_bucket_no_upscale(*size, 512 * 512, 64)
    assert got[0] == bucket
    assert got[1] == resized
    assert got[2] == pytest.approx(ar_error)


def test_no_upscale_image_smaller_than_step_gets_zero_bucket():
    bucket, resized, _ = select_bucket_no_upscale(40, 40, 512 * 512, 64)
    assert bucket == (0, 0) and resized == (40, 40)


def test_cover_size_never_short_of_bucket():
    for w in range(100, 3000, 37):
        for bucket in BUCKETS_512:
            r = cover_size(w, 777, bucket)
            assert r[0] >= bucket[0] and r[1] >= bucket[1]


def test_bucketer_rounds_min_down_max_up_like_kohya():
    b = Bucketer(DatasetOptions(resolution=512, min_bucket_reso=300, max_bucket_reso=1000))
    assert DatasetOptions(min_bucket_reso=300, max_bucket_reso=1000).bucket_range == (256, 1024)
    assert b.resolutions == BUCKETS_512
    assert b.smallest_side == 256


def test_bucketer_without_bucketing_uses_one_bucket():
    b = Bucketer(DatasetOptions(resolution=(512, 768), enable_bucket=False))
    assert b.resolutions == [(512, 768)]
    assert b.assign(1000, 1000) == ((512, 768), (768, 768), pytest.approx(512 / 768 - 1))


def test_options_validate_names_the_field():
    with pytest.raises(ValueError, match="max_bucket_reso"):
        DatasetOptions(resolution=1024, max_bucket_reso=768).validate()
    with pytest.raises(ValueError, match="min_bucket_reso"):
        DatasetOptions(resolution=512, min_bucket_reso=640).validate()
    with pytest.raises(ValueError, match="caption_dropout_rate"):
        DatasetOptions(caption_dropout_rate=1.5).validate()
    with pytest.raises(ValueError, match="batch_size"):
        DatasetOptions(batch_size=0).validate()
    assert DatasetOptions(caption_extension="caption").caption_extension == ".caption"
    assert DatasetOptions(resolution=(640, 512)).resolution_wh == (640, 512)
