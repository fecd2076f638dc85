"""Pivotal tuning: new token embeddings trained together with the LoRA (the HF "advanced" SDXL recipe), used by
the webui as a textual-inversion embedding bundled in the LoRA file (`bundle_emb.<token>.…`)."""

from .embeddings import PivotalEmbeddings
from .files import bundle_tensors, embedding_file_tensors, read_bundle, save_embedding_file

__all__ = ["PivotalEmbeddings", "bundle_tensors", "embedding_file_tensors", "read_bundle",
           "save_embedding_file"]
