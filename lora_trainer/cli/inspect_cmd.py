"""`python -m lora_trainer inspect FILE.safetensors`: what the LoRA holds and whether A1111 can use all of it.

Exit status: 0 compatible, 1 readable but not compatible (the report says why), 2 not a readable LoRA file.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a kohya LoRA .safetensors file")


def run(args) -> int:
    from ..lora_file import LoRAFormatError
    from ..lora_file.inspect import format_report, inspect_lora

    try:
        report = inspect_lora(args.file)
    except (LoRAFormatError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.compatible else 1
