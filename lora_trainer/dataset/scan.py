"""scan_dataset: folders -> ImageItems (sizes, captions, buckets, repeats) and the report. Reads headers and
caption files only; pixels are decoded later by images.load_image (or for a cheap integrity check, see probe)."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .batching import BucketBatchSampler, compute_steps, count_batches
from .buckets import Bucketer
from .captions import caption_extensions, read_caption_file, split_tags
from .layout import CACHE_DIR_NAME, Layout, Subset, discover, is_image, list_dir
from .options import DatasetOptions
from .probe import IMAGE_EXTENSIONS, probe_image
from .report import DatasetReport, FolderReport

logger = logging.getLogger(__name__)

# Below this many pixels on a side there is nothing to learn from (and upscaling would be > 16x): always skipped.
MIN_IMAGE_SIDE = 16
_LIST_IN_WARNING = 5  # files named in one aggregated warning


@dataclass
class ImageItem:
    path: Path
    caption: str  # raw caption (first line of the caption file), or the folder's class tokens when there is none
    has_caption_file: bool
    is_reg: bool
    repeats: int  # for reg images: after kohya's balancing
    class_tokens: str
    folder: str
    original_size: Tuple[int, int]  # (w, h) after EXIF rotation, before resizing
    bucket: Tuple[int, int]  # (w, h)
    resized_size: Tuple[int, int]  # (w, h) the image is resized to before cropping to the bucket
    loss_weight: float = 1.0  # prior_loss_weight for reg images
    random_crop: bool = False
    caption_path: Optional[Path] = None
    ar_error: float = 0.0  # bucket aspect ratio - image aspect ratio

    @property
    def original_size_hw(self) -> Tuple[int, int]:
        """SDXL's original_size conditioning, (h, w) before resizing (diffusers convention)."""
        return self.original_size[1], self.original_size[0]


@dataclass
class Dataset:
    items: List[ImageItem]  # train + reg (balanced); unusable files are only in report.skipped
    report: DatasetReport
    options: DatasetOptions = field(default_factory=DatasetOptions)

    @property
    def train_items(self) -> List[ImageItem]:
        return [i for i in self.items if not i.is_reg]

    @property
    def reg_items(self) -> List[ImageItem]:
        return [i for i in self.items if i.is_reg]

    def sampler(self, seed: int = 0) -> BucketBatchSampler:
        return BucketBatchSampler(self.items, self.options.batch_size, seed)


class _Notes:
    """Per-file facts collected into one warning per kind, so 200 RGBA images make one line, not 200."""

    def __init__(self):
        self.by_kind: Dict[str, List[str]] = defaultdict(list)

    def add(self, kind: str, name: str):
        self.by_kind[kind].append(name)

    def lines(self) -> List[str]:
        out = []
        for kind, names in self.by_kind.items():
            shown = ", ".join(names[:_LIST_IN_WARNING])
            more = f" (+{len(names) - _LIST_IN_WARNING} more)" if len(names) > _LIST_IN_WARNING else ""
            out.append(f"{len(names)} image{'s' if len(names) > 1 else ''} {kind}: {shown}{more}")
        return out


def _index_folder(subset: Subset, exts_lower: List[str], report: DatasetReport):
    """One listing of the folder -> (images, {stem: {caption ext: path}}); everything else is reported."""
    entries = list_dir(subset.path)
    images = [p for p in entries if p.is_file() and is_image(p)]
    captions: Dict[str, Dict[str, Path]] = defaultdict(dict)
    for p in entries:
        if p.is_dir():
            report.skipped.append((str(p), f"subfolders are not scanned (only files directly inside "
                                           f"{subset.name} are); move its images up"))
        elif p.suffix.lower() in exts_lower:
            captions[p.stem][p.suffix.lower()] = p
        elif p.suffix.lower() == ".npz":
            report.skipped.append((str(p), "kohya latent cache file: not used (this trainer keeps its own cache in "
                                           f"{CACHE_DIR_NAME})"))
        elif not is_image(p):
            report.skipped.append((str(p), f"not an image ({', '.join(IMAGE_EXTENSIONS)}) or caption file"))
    image_stems = {p.stem for p in images}
    for stem, found in captions.items():
        if stem not in image_stems:
            for path in found.values():
                report.skipped.append((str(path), f"caption file without an image (no {stem}.png/.jpg/.jpeg/"
                                                  f".webp/.bmp next to it)"))
        elif len(found) > 1:
            chosen = next(found[e] for e in exts_lower if e in found)
            for path in found.values():
                if path != chosen:
                    report.skipped.append((str(path), f"not used: {chosen.name} takes precedence"))
    return images, captions


def _bucket_or_skip(path: Path, size: Tuple[int, int], options: DatasetOptions, bucketer: Bucketer,
                    report: DatasetReport, notes: _Notes):
    """(bucket, resized, ar_error), or None after reporting why the image is not used."""
    w, h = size
    if min(w, h) < MIN_IMAGE_SIDE:
        report.skipped.append((str(path), f"{w}x{h} is too small to train on (each side needs at least "
                                          f"{MIN_IMAGE_SIDE} px)"))
        return None
    smallest = bucketer.smallest_side
    if bucketer.resolutions is not None and max(w, h) < smallest:  # upscaling mode, image below every bucket
        if not options.upscale_small_images:
            report.skipped.append((str(path), f"{w}x{h} is smaller than the smallest bucket ({smallest} px) on both "
                                              f"sides and upscale_small_images is off"))
            return None
        notes.add(f"smaller than the smallest bucket ({smallest} px) on both sides, upscaled (expect soft results)",
                  f"{path.name} ({w}x{h})")
    bucket, resized, ar_error = bucketer.assign(w, h)
    if min(bucket) < 1:
        report.skipped.append((str(path), f"{w}x{h} has a side shorter than the bucket step "
                                          f"({options.bucket_reso_steps} px); with bucket_no_upscale it cannot fill "
                                          f"a bucket"))
        return None
    return bucket, resized, ar_error


def _scan_subset(subset: Subset, options: DatasetOptions, bucketer: Bucketer, report: DatasetReport,
                 notes: _Notes) -> List[ImageItem]:
    exts_lower = [e.lower() for e in caption_extensions(options.caption_extension)]
    images, captions = _index_folder(subset, exts_lower, report)
    folder = FolderReport(name=subset.name, path=str(subset.path), repeats=subset.repeats,
                          class_tokens=subset.class_tokens, is_reg=subset.is_reg)
    used_exts: List[str] = []
    items: List[ImageItem] = []
    for path in images:
        probe = probe_image(path, options.max_image_pixels)
        if probe.error:
            report.skipped.append((str(path), probe.error))
            continue
        placed = _bucket_or_skip(path, probe.size, options, bucketer, report, notes)
        if placed is None:
            continue
        if probe.note:
            notes.add(probe.note, path.name)

        found = captions.get(path.stem, {})
        caption_path = next((found[e] for e in exts_lower if e in found), None)
        text = None
        if caption_path is not None:
            text, warning = read_caption_file(caption_path)
            if warning:
                report.warnings.append(f"{subset.name}/{caption_path.name}: {warning}")
        if text is not None:
            folder.captions_found += 1
            if caption_path.suffix.lower() not in used_exts:
                used_exts.append(caption_path.suffix.lower())
        else:
            folder.captions_missing += 1
            if not subset.class_tokens:
                notes.add("with no caption file and no class tokens in the folder name, trained with an empty "
                          "caption", path.name)
        caption = text if text is not None else subset.class_tokens
        for tag in split_tags(caption):
            folder.tags[tag.lower()] = folder.tags.get(tag.lower(), 0) + 1
        bucket, resized, ar_error = placed
        items.append(ImageItem(
            path=path, caption=caption, has_caption_file=text is not None, is_reg=subset.is_reg,
            repeats=subset.repeats, class_tokens=subset.class_tokens, folder=subset.name, original_size=probe.size,
            bucket=bucket, resized_size=resized,
            loss_weight=float(options.prior_loss_weight) if subset.is_reg else 1.0,
            random_crop=options.random_crop, caption_path=caption_path if text is not None else None,
            ar_error=ar_error))

    folder.images = len(items)
    used_exts.sort(key=exts_lower.index)
    folder.caption_extension_used = "+".join(used_exts)
    if used_exts and used_exts != [exts_lower[0]]:
        report.warnings.append(f"{subset.name}: captions read from {folder.caption_extension_used} files "
                               f"(caption_extension is {options.caption_extension})")
    if not images:
        report.skipped.append((str(subset.path), "empty folder: no images (png, jpg, jpeg, webp, bmp) in it"))
    report.folders.append(folder)
    return items


def _balance_reg(train_items: List[ImageItem], reg_items: List[ImageItem], report: DatasetReport) -> List[ImageItem]:
    """kohya: register reg images (with their repeats) until they match train images × repeats; if there are
    too few, keep cycling and add one repeat at a time. Extra reg images are not used."""
    num_train = sum(i.repeats for i in train_items)
    if not reg_items or num_train == 0:
        return []
    registered: List[ImageItem] = []
    n = 0
    first_loop = True
    while n < num_train:
        for item in reg_items:
            if first_loop:
                registered.append(item)
                n += item.repeats
            else:
                item.repeats += 1
                n += 1
            if n >= num_train:
                break
        first_loop = False
    if len(registered) < len(reg_items):
        report.warnings.append(f"some reg images are not used: {len(reg_items) - len(registered)} of "
                               f"{len(reg_items)} (reg images × repeats exceed the {num_train} train samples)")
    return registered


def _add_layout(layout: Layout, report: DatasetReport):
    report.skipped += layout.skipped
    report.warnings += layout.warnings


def scan_dataset(train_dir: Union[str, Path], reg_dir: Union[str, Path, None] = None,
                 options: Optional[DatasetOptions] = None) -> Dataset:
    """Never raises for bad files or folders (they end up in report.skipped / report.fix); raises ValueError
    for invalid options."""
    options = (options or DatasetOptions()).validate()
    # Absolute and normalised, so "." or "../img" still have a folder name to read repeats from.
    train_dir = Path(os.path.abspath(os.path.expanduser(train_dir)))
    reg_dir = Path(os.path.abspath(os.path.expanduser(reg_dir))) if reg_dir else None
    bucketer = Bucketer(options)
    report = DatasetReport(train_dir=str(train_dir), reg_dir=str(reg_dir) if reg_dir else None,
                           bucket_description=bucketer.describe(), bucketing=options.enable_bucket,
                           batch_size=options.batch_size, flip_aug=options.flip_aug,
                           gradient_accumulation_steps=options.gradient_accumulation_steps)
    notes = _Notes()
    train_layout = discover(train_dir, is_reg=False)
    _add_layout(train_layout, report)
    report.flat_folder = train_layout.flat
    train_items: List[ImageItem] = []
    for subset in train_layout.subsets:
        train_items += _scan_subset(subset, options, bucketer, report, notes)

    reg_items: List[ImageItem] = []
    if reg_dir is not None:
        reg_layout = discover(reg_dir, is_reg=True)
        _add_layout(reg_layout, report)
        if not reg_layout.subsets:
            report.warnings.append(f"regularisation folder not used: {reg_layout.fix}")
        for subset in reg_layout.subsets:
            reg_items += _scan_subset(subset, options, bucketer, report, notes)
        report.num_reg_images = sum(i.repeats for i in reg_items)  # before balancing, like ss_num_reg_images
    report.warnings += notes.lines()

    report.num_train_images = sum(i.repeats for i in train_items)
    reg_used = _balance_reg(train_items, reg_items, report)
    report.num_reg_samples = sum(i.repeats for i in reg_used)
    items = train_items + reg_used

    counts: Dict[Tuple[int, int], int] = defaultdict(int)
    for item in items:
        counts[item.bucket] += item.repeats
    report.buckets = {f"{w}x{h}": n for (w, h), n in sorted(counts.items())}
    if items:
        report.mean_ar_error = sum(abs(i.ar_error) for i in items) / len(items)
    report.batches_per_epoch = count_batches(counts.values(), options.batch_size)
    report.steps_per_epoch, report.total_steps, report.epochs = compute_steps(
        report.batches_per_epoch, options.gradient_accumulation_steps, options.epochs, options.max_steps)
    if options.epochs is None and options.max_steps is None:
        report.schedule_note = " (no epochs or max steps given: kohya's default of 1600 steps)"
    elif options.epochs is None and report.total_steps % max(report.steps_per_epoch, 1):
        report.schedule_note = " (max steps reached in the middle of the last epoch)"

    report.ok = bool(train_items)
    if not report.ok:
        if train_layout.fix:
            report.fix = train_layout.fix
        else:
            names = ", ".join(s.name for s in train_layout.subsets)
            report.fix = (f"No usable image in {names}: every file was skipped (see 'Skipped' for the reason of "
                          f"each). Add png/jpg/webp/bmp images there.")
    logger.info("scanned %s: %d train samples, %d reg samples, %d skipped", train_dir, report.num_train_images,
                report.num_reg_samples, len(report.skipped))
    return Dataset(items=items, report=report, options=options)
