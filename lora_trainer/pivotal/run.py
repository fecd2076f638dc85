"""Pivotal tuning inside one training run: what the session and the loop call (one call each)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .embeddings import PivotalEmbeddings
from .files import BUNDLE_PREFIX, bundle_tensors, save_embedding_file
from .options import pivotal_lr


class PivotalRun:
    def __init__(self, session):
        from ..train.errors import TrainError
        from ..train.prodigy import text_encoder_weight_decay

        c = self.config = session.config
        if session.adapter.lowvram:  # the same reason the session refuses to train the text encoder there
            raise TrainError("pivotal_tuning: the webui runs with --medvram/--lowvram, which moves the text encoder "
                             "off the GPU while the UNet runs, and pivotal tuning back-propagates through it; turn "
                             "pivotal tuning off (or restart the webui without those flags)")
        try:
            self.embeddings = PivotalEmbeddings.create(session.adapter, c)
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
        self.freeze_at = PivotalEmbeddings.freeze_step(c, session.total_steps)
        self.weight_decay = text_encoder_weight_decay(c)
        self.log = session.log
        self.embedding_file: Optional[Path] = None
        self.folder = Path(c.pivotal_embeddings_dir).expanduser() if c.pivotal_embeddings_dir else None
        existing = self.folder / f"{c.pivotal_token}.safetensors" if self.folder is not None else None
        if existing is not None and existing.exists() and not c.overwrite:
            raise TrainError(f"pivotal_token: the embedding {existing} already exists; choose another token or "
                             "turn on 'overwrite'")
        ids = self.embeddings.ids
        session.log(f"pivotal tuning: '{c.pivotal_token}' (token ids {ids}) becomes {c.pivotal_vectors_per_token} "
                    f"new vectors per text encoder, initialised {_init_text(c)}; trained for the first "
                    f"{self.freeze_at} of {session.total_steps} steps, then frozen")

    @classmethod
    def start(cls, session) -> Optional[PivotalRun]:
        return cls(session) if session.config.pivotal_tuning else None

    def param_group(self) -> dict:
        return self.embeddings.param_group(pivotal_lr(self.config), self.weight_decay)

    @property
    def lookup(self):
        return self.embeddings.lookup

    def before_step(self, step: int, optimizer, scheduler) -> None:
        if step >= self.freeze_at and not self.embeddings.frozen:
            self.embeddings.freeze(optimizer, scheduler)
            self.log(f"pivotal tuning: '{self.config.pivotal_token}' frozen at step {step} "
                     f"(pivotal_frac {self.config.pivotal_frac:g}); the LoRA trains on")

    def bundle(self) -> dict:
        return bundle_tensors(self.config.pivotal_token, self.embeddings.tensors())

    def load_bundle(self, tensors: dict) -> dict:
        """Take this token's vectors out of a saved state's tensors (for resume); return the rest."""
        import torch

        from .files import read_bundle

        bundled = read_bundle({k: v for k, v in tensors.items() if k.startswith(BUNDLE_PREFIX + ".")})
        vec = bundled.get(self.config.pivotal_token)
        if vec is not None:
            vec = vec if isinstance(vec, dict) else {next(iter(self.embeddings.embedding.params)): vec}
            with torch.no_grad():
                for key, p in self.embeddings.embedding.params.items():
                    p.copy_(vec[key].to(p.device, p.dtype))
        return {k: v for k, v in tensors.items() if not k.startswith(BUNDLE_PREFIX + ".")}

    def save_embedding_file(self, lora_file: Path, step: int) -> Optional[Path]:
        """The separate `<token>.safetensors` for the final LoRA (intermediate LoRAs keep theirs bundled only:
        the webui prefers a folder embedding over a bundled one of the same name)."""
        if self.folder is None:
            self.log("pivotal tuning: no embeddings folder set (pivotal_embeddings_dir), so only the bundled "
                     "embedding was saved")
            return None
        metadata = {"lora_file": lora_file.name, "step": str(step),
                    "vectors": str(self.config.pivotal_vectors_per_token)}
        self.embedding_file = save_embedding_file(self.folder, self.config.pivotal_token, self.embeddings.tensors(),
                                                  metadata)
        self.log(f"pivotal tuning: saved the embedding {self.embedding_file} (also bundled in {lora_file.name})")
        return self.embedding_file


def _init_text(config) -> str:
    init = (config.pivotal_init or "random").strip()
    return "randomly at the token table's mean norm" if init.lower() == "random" else f"from '{init}'"
