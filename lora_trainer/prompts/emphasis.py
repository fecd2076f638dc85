"""Prompt emphasis as the webui reads it: `(a)` ×1.1, `[a]` ÷1.1, `(a:1.3)` ×1.3, `\\(` `\\)` `\\[` `\\]` `\\\\` literal
characters, and `BREAK` (a chunk break). Written from the grammar the webui documents for
`modules/prompt_parser.py parse_prompt_attention` (A1111 1.10); it reproduces that function's output, quirks
included (tested against the real one when a webui checkout is available):

- a lone backslash before any other character is dropped (`a\\b` reads `ab`);
- unclosed brackets apply to the end of the text; a stray `)` / `]` / `:1.2)` is plain text;
- `BREAK` is split out of plain text runs only (as a marker of weight -1); a bracket around it then scales that marker
  too, after which it is no longer a break but the word "BREAK" (the webui does the same);
- neighbouring pieces with equal weights are merged.

`apply_original_emphasis` is the webui's default "Original" emphasis (`modules/sd_emphasis.py`): multiply each token's
hidden state by its weight, then rescale so the mean of the chunk is what it was.
"""

from __future__ import annotations

import re
from typing import List

import torch

ROUND = 1.1
SQUARE = 1 / 1.1
BREAK_WEIGHT = -1.0
_ESCAPABLE = "()[]\\"
_SPECIAL = "\\()[]:"
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")  # ":1.3)" closing a round bracket
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


class EmphasisError(ValueError):
    """A `(text:weight)` whose weight is not a number (the webui fails on such a prompt too)."""


def parse_emphasis(text: str) -> List[List]:
    """[[piece, weight], ...] for `text`; [["", 1.0]] for an empty text. BREAK markers are ["BREAK", -1.0]."""
    pieces: List[List] = []
    rounds: List[int] = []  # index into `pieces` where each open bracket started
    squares: List[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    def add_plain(run: str) -> None:
        for n, part in enumerate(_BREAK.split(run)):
            if n:
                pieces.append(["BREAK", BREAK_WEIGHT])
            pieces.append([part, 1.0])

    i, end = 0, len(text)
    while i < end:
        ch = text[i]
        if ch == "\\":
            if i + 1 < end and text[i + 1] in _ESCAPABLE:
                pieces.append([text[i + 1], 1.0])
                i += 2
            else:
                pieces.append(["", 1.0])  # a lone backslash vanishes
                i += 1
        elif ch == "(":
            rounds.append(len(pieces))
            i += 1
        elif ch == "[":
            squares.append(len(pieces))
            i += 1
        elif ch == ":":
            match = _WEIGHT_CLOSE.match(text, i)
            if match is None:
                add_plain(":")
                i += 1
            elif rounds:
                try:
                    weight = float(match.group(1))
                except ValueError:
                    raise EmphasisError(f"emphasis weight {match.group(1)!r} in {text!r} is not a number") from None
                scale_from(rounds.pop(), weight)
                i = match.end()
            else:
                add_plain(match.group(0))
                i = match.end()
        elif ch == ")" and rounds:
            scale_from(rounds.pop(), ROUND)
            i += 1
        elif ch == "]" and squares:
            scale_from(squares.pop(), SQUARE)
            i += 1
        elif ch in ")]":
            add_plain(ch)
            i += 1
        else:
            j = i + 1
            while j < end and text[j] not in _SPECIAL:
                j += 1
            add_plain(text[i:j])
            i = j
    for start in rounds:
        scale_from(start, ROUND)
    for start in squares:
        scale_from(start, SQUARE)
    if not pieces:
        return [["", 1.0]]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return merged


def apply_original_emphasis(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """z [R, T, D] (one row per prompt chunk), multipliers [R, T]. Each row is scaled token-wise, then rescaled to
    its own original mean: what the webui computes when it encodes that prompt on its own (as txt2img does)."""
    multipliers = multipliers.to(device=z.device, dtype=torch.float32)  # fp32 like the webui's: fp16 z promotes
    original_mean = z.mean(dim=(1, 2), keepdim=True)
    z = z * multipliers.unsqueeze(-1)
    return z * (original_mean / z.mean(dim=(1, 2), keepdim=True))
