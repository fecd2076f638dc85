"""What the scan found, as data (for the UI/API: to_dict) and as text (for the CLI: to_text), plus the kohya
metadata shapes (ss_tag_frequency, ss_dataset_dirs, ss_bucket_info) derived from it (reference §2.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple


@dataclass
class FolderReport:
    name: str
    path: str
    repeats: int
    class_tokens: str
    is_reg: bool
    images: int = 0
    captions_found: int = 0
    captions_missing: int = 0
    caption_extension_used: str = ""  # ".txt", ".caption", ".txt+.caption" when mixed, "" when none found
    tags: Dict[str, int] = field(default_factory=dict)  # per image, without repeats (kohya's ss_tag_frequency)


@dataclass
class DatasetReport:
    train_dir: str = ""
    reg_dir: Optional[str] = None
    folders: List[FolderReport] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: List[str] = field(default_factory=list)
    buckets: Dict[str, int] = field(default_factory=dict)  # "WxH" -> samples incl. repeats, sorted by (w, h)
    bucket_description: str = ""
    bucketing: bool = True
    mean_ar_error: float = 0.0
    num_train_images: int = 0  # train images × repeats
    num_reg_images: int = 0  # reg images × repeats, before balancing (kohya's ss_num_reg_images)
    num_reg_samples: int = 0  # reg samples per epoch after balancing (= num_train_images when there are enough)
    batch_size: int = 1
    flip_aug: bool = False
    gradient_accumulation_steps: int = 1
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    epochs: int = 0
    schedule_note: str = ""
    flat_folder: bool = False
    ok: bool = False
    fix: str = ""

    # ---- data for the UI / API -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out

    # ---- kohya metadata shapes ------------------------------------------------------------------------
    def tag_frequency(self) -> Dict[str, Dict[str, int]]:
        """ss_tag_frequency: {dir basename: {tag: count}}; reg dirs included; same basenames merged (kohya)."""
        out: Dict[str, Dict[str, int]] = {}
        for folder in self.folders:
            counts = out.setdefault(folder.name, {})
            for tag, n in folder.tags.items():
                counts[tag] = counts.get(tag, 0) + n
        return out

    def dataset_dirs(self, is_reg: bool = False) -> Dict[str, Dict[str, int]]:
        """ss_dataset_dirs (or ss_reg_dataset_dirs with is_reg=True): {basename: {n_repeats, img_count}}."""
        return {f.name: {"n_repeats": f.repeats, "img_count": f.images}
                for f in self.folders if f.is_reg == is_reg and f.images}

    def bucket_info(self) -> Optional[dict]:
        """ss_bucket_info, or None when bucketing is off (kohya writes null then)."""
        if not self.bucketing:
            return None
        buckets = {}
        for i, (name, count) in enumerate(self.buckets.items()):
            w, h = (int(v) for v in name.split("x"))
            buckets[str(i)] = {"resolution": [w, h], "count": count}
        return {"buckets": buckets, "mean_img_ar_error": self.mean_ar_error}

    # ---- text for the CLI -----------------------------------------------------------------------------
    def _rel(self, path: str) -> str:
        for base in (self.train_dir, self.reg_dir):
            if base:
                try:
                    return str(Path(path).relative_to(Path(base).parent))
                except ValueError:
                    pass
        return path

    def _folder_table(self, is_reg: bool) -> List[str]:
        rows = [f for f in self.folders if f.is_reg == is_reg]
        if not rows:
            return []
        width = max(12, *(len(f.name) for f in rows))
        tok_width = max(12, *(len(f.class_tokens) for f in rows))
        lines = [f"  {'folder':<{width}}  repeats  {'class tokens':<{tok_width}}  images  captions  missing  ext"]
        for f in rows:
            lines.append(f"  {f.name:<{width}}  {f.repeats:>7}  {f.class_tokens or '-':<{tok_width}}  {f.images:>6}"
                         f"  {f.captions_found:>8}  {f.captions_missing:>7}  {f.caption_extension_used or '-'}")
        return lines

    def to_text(self) -> str:
        lines = [f"Train folder: {self.train_dir}"]
        lines += self._folder_table(False) or ["  (no usable image folders)"]
        if self.reg_dir:
            lines.append(f"Regularisation folder: {self.reg_dir}")
            lines += self._folder_table(True) or ["  (no usable image folders)"]
        if self.flat_folder:
            lines.append("  Flat folder: every image is used once per epoch (repeats 1). For repeats and class "
                         "tokens, put the images in a subfolder named like 10_mychar.")
        if self.buckets:
            lines.append(f"Buckets ({self.bucket_description}; counts include repeats):")
            top = max(self.buckets.values())
            for name, count in self.buckets.items():
                bar = "#" * max(1, round(30 * count / top))
                lines.append(f"  {name:>9}  {count:>6}  {bar}")
            lines.append(f"  mean aspect-ratio error: {self.mean_ar_error:.4f}")
        if self.num_train_images:
            samples = f"{self.num_train_images} train samples (images × repeats)"
            if self.num_reg_samples:
                samples += f" + {self.num_reg_samples} reg samples (balanced to the train count)"
            lines.append(f"Steps: {samples}")
            lines.append(f"  batch size {self.batch_size} → {self.batches_per_epoch} batches/epoch (one bucket per "
                         f"batch); gradient accumulation {self.gradient_accumulation_steps} → "
                         f"{self.steps_per_epoch} steps/epoch")
            lines.append(f"  {self.epochs} epochs → {self.total_steps} steps total{self.schedule_note}")
            if self.flip_aug:
                lines.append("  flip augmentation on: each sample is mirrored with probability 0.5 (the latent cache "
                             "holds both versions)")
        if self.skipped:
            lines.append(f"Skipped ({len(self.skipped)}):")
            lines += [f"  {self._rel(p)}: {reason}" for p, reason in self.skipped]
        if self.warnings:
            lines.append(f"Warnings ({len(self.warnings)}):")
            lines += [f"  {w}" for w in self.warnings]
        if self.ok:
            lines.append("Result: OK, ready to train.")
        else:
            lines.append(f"Result: NOTHING TO TRAIN. {self.fix}")
        return "\n".join(lines)
