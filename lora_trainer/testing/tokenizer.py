"""A CLIP tokenizer folder built from the BPE vocabulary that open_clip ships (no hub download).

`CLIPTokenizer.from_pretrained(folder)` on it gives the same ids as `open_clip.tokenize` and pads with 49407,
like SD1's tokenizer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points from 256 up.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def open_clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary the tests use")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer(folder: Path) -> Path:
    """Write vocab.json and merges.txt (49,408 tokens) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = gzip.open(open_clip_bpe_path()).read().decode("utf-8")
    lines = text.split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    # CLIPTokenizer skips the first line and keeps the same slice open_clip keeps.
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges), encoding="utf-8")
    return folder


def tiny_cache_dir() -> Path:
    root = Path(os.environ.get("LORA_TRAINER_TINY_CACHE", Path(tempfile.gettempdir()) / "lora_trainer_tiny"))
    root.mkdir(parents=True, exist_ok=True)
    return root
