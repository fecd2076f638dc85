"""`python -m lora_trainer dataset DIR`: check a kohya-style dataset and print what training would see."""

from __future__ import annotations

import argparse
import json
import sys

from lora_trainer.dataset import DatasetOptions, scan_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="train folder: holds subfolders named like 10_mychar (a flat folder also works)")
    parser.add_argument("--reg", metavar="DIR", help="regularisation folder, same layout")
    parser.add_argument("--resolution", default="512", help="training resolution: 512 or WIDTH,HEIGHT (default 512)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="epochs (wins over --max-steps; neither: kohya's 1600 steps)")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--caption-extension", default=".txt",
                        help="caption file extension (default .txt; .caption/.txt is tried when it is missing)")
    parser.add_argument("--min-bucket", type=int, default=256, help="smallest bucket side (default 256)")
    parser.add_argument("--max-bucket", type=int, default=1024, help="largest bucket side (default 1024)")
    parser.add_argument("--no-upscale", action="store_true", help="bucket_no_upscale: never enlarge images")
    parser.add_argument("--flip", action="store_true", help="flip augmentation (shown in the report only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (what the UI renders)")


def _parse_resolution(text: str):
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    values = tuple(int(p) for p in parts)
    return values[0] if len(values) == 1 else values


def run(args: argparse.Namespace) -> int:
    try:
        options = DatasetOptions(
            resolution=_parse_resolution(args.resolution), batch_size=args.batch_size, epochs=args.epochs,
            max_steps=args.max_steps, gradient_accumulation_steps=args.grad_accum,
            caption_extension=args.caption_extension, min_bucket_reso=args.min_bucket,
            max_bucket_reso=args.max_bucket, bucket_no_upscale=args.no_upscale, flip_aug=args.flip,
        ).validate()
    except ValueError as exc:
        print(f"error: invalid option: {exc}", file=sys.stderr)
        return 2
    report = scan_dataset(args.dir, args.reg, options).report
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.to_text())
    return 0 if report.ok else 1
