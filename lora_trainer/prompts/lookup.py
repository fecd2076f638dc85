"""A ready-made embeddings lookup for the protocol in `lora_trainer/prompts/__init__.py`, built like the webui's
`EmbeddingDatabase.register_embedding_by_name`: each trigger text is tokenised (no BOS/EOS), indexed by its first
id, longest match first."""

from __future__ import annotations

from typing import Dict, List, Tuple

from .chunks import TokenizerRules


class EmbeddingLookup:
    """`embeddings` maps trigger text -> embedding (`.vectors`, `.vec`); `rules` gives the tokenizer (HF CLIP and
    OpenCLIP share CLIP's ids, so one lookup serves both SDXL encoders, as the webui's single database does)."""

    def __init__(self, embeddings: Dict[str, object], rules: TokenizerRules):
        self.embeddings = dict(embeddings)
        self._by_first_id: Dict[int, List[Tuple[List[int], object]]] = {}
        for name, embedding in self.embeddings.items():
            ids = rules.tokenize([name])[0]
            if not ids:
                raise ValueError(f"embedding trigger {name!r} has no tokens")
            self._by_first_id.setdefault(ids[0], []).append((ids, embedding))
        for matches in self._by_first_id.values():
            matches.sort(key=lambda match: len(match[0]), reverse=True)

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self._by_first_id.get(tokens[offset], ()):
            if list(tokens[offset:offset + len(ids)]) == ids:
                return embedding, len(ids)
        return None, None
