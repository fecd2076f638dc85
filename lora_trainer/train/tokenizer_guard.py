"""The restore contract for what is not a tensor: the text encoders' tokenizers and the embedding tables' sizes.

The trainer never adds tokens (pivotal tuning substitutes vectors after the token lookup, as the webui does), so
this is a safety net with a report: a tokenizer whose vocabulary changed, or an embedding table resized, is put
back and named. Tokenizers: each module's `tokenizer` attribute (HF CLIP in ldm/sgm embedders) and open_clip's
module-level `_tokenizer` (used by `open_clip.tokenize`, SD2 and SDXL TE2).
"""

from __future__ import annotations

import copy
import sys
from typing import Dict, List, Tuple

from torch import nn

# HF (4.30 and 4.46): added_tokens_encoder/_decoder (or _added_tokens_*), unique_no_split_tokens, tokens_trie, and
# 4.46's cached total_vocab_size (what len() returns); open_clip SimpleTokenizer: encoder/decoder/vocab_size/...
_HF_MARKS = ("added_tokens", "no_split", "trie", "total_vocab_size")
_OPEN_CLIP_KEYS = ("encoder", "decoder", "vocab_size", "all_special_ids")


def find_tokenizers(model: nn.Module) -> Dict[str, object]:
    found: Dict[str, object] = {}
    for name, module in model.named_modules():
        tok = module.__dict__.get("tokenizer")
        if tok is not None and not isinstance(tok, nn.Module) and id(tok) not in map(id, found.values()):
            found[f"{name}.tokenizer" if name else "tokenizer"] = tok
    oc = sys.modules.get("open_clip.tokenizer")
    if oc is not None and getattr(oc, "_tokenizer", None) is not None:
        found["open_clip.tokenizer._tokenizer"] = oc._tokenizer
    return found


def _state_keys(tok) -> List[str]:
    keys = list(vars(tok))
    if all(k in keys for k in _OPEN_CLIP_KEYS):
        return list(_OPEN_CLIP_KEYS)
    return [k for k in keys if any(mark in k for mark in _HF_MARKS)]


def _fingerprint(value):
    """A comparable form: tokenizer helpers such as HF's Trie have no __eq__, so compare their contents."""
    if isinstance(value, dict):
        return {str(k): _fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_fingerprint(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return (type(value).__name__, _fingerprint(vars(value)))
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def tokenizer_size(tok) -> int:
    try:
        return len(tok)
    except TypeError:
        return len(getattr(tok, "encoder", {}))


class TokenizerGuard:
    def __init__(self, model: nn.Module):
        self.tokenizers: Dict[str, Tuple[object, int, dict, object]] = {}
        for name, tok in find_tokenizers(model).items():
            saved = {k: copy.deepcopy(vars(tok)[k]) for k in _state_keys(tok)}
            self.tokenizers[name] = (tok, tokenizer_size(tok), saved, _fingerprint(saved))
        self.tables = [(name, m, m.num_embeddings) for name, m in model.named_modules()
                       if isinstance(m, nn.Embedding)]

    def restore(self) -> List[str]:
        """Put tokenizers and table sizes back; return what had changed."""
        changed = []
        for name, (tok, size, saved, fingerprint) in self.tokenizers.items():
            now = _fingerprint({k: vars(tok).get(k) for k in saved})
            if tokenizer_size(tok) != size or now != fingerprint:
                changed.append(f"{name} ({tokenizer_size(tok)} tokens, was {size})")
                for key, value in saved.items():
                    setattr(tok, key, value)
        for name, module, rows in self.tables:
            if module.num_embeddings != rows:
                changed.append(f"{name}.num_embeddings ({module.num_embeddings}, was {rows})")
                module.num_embeddings = rows
            weight = module.__dict__["_parameters"].get("weight")
            if weight is not None and weight.shape[0] > rows:
                # transformers 4.46 resizes in place (`weight.data = bigger`); the old rows stay first, so the
                # slice is the original table, values exactly (no copy)
                changed.append(f"{name}.weight ({weight.shape[0]} rows, was {rows})")
                weight.data = weight.data[:rows]
        return changed
