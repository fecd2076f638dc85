"""What the job, the tab and the API need from the webui, as one object.

`webui.WebuiHost` implements it with `modules.*`; tests use `Host` itself (or a subclass) so the job and the API
run without a webui. Every method here is a safe no-op default.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, ContextManager, Dict, List, Optional, Tuple

# (name, caption function) pairs, e.g. [("BLIP", fn), ("DeepBooru", fn)]
Captioners = List[Tuple[str, Callable]]


class Host:
    # ---- the model -------------------------------------------------------------------------------------------
    def model(self):
        """The loaded model object, or None. Must not load one (only the checkpoint already loaded is used)."""
        return None

    def model_title(self) -> str:
        return ""

    def no_model_message(self) -> str:
        return ("No checkpoint is loaded in the webui. Pick one in the checkpoint dropdown at the top and wait until "
                "it has loaded.")

    def checkpoint_identity(self) -> Dict[str, str]:
        """The loaded checkpoint for the LoRA's metadata: {"name": file name, "hash": the webui's old 8-digit
        hash, "sha256": full sha256 when already known}; any key may be missing. Must not read the checkpoint."""
        return {}

    def unsupported_reason(self) -> str:
        """Why the webui's current setup cannot train (e.g. --lowvram), or ""."""
        return ""

    def clip_skip(self) -> int:
        """The webui's *Clip skip* (`CLIP_stop_at_last_layers`) that txt2img uses for SD1 prompts; 1 without one."""
        return 1

    # ---- GPU ownership and progress --------------------------------------------------------------------------
    def gpu_lock(self) -> ContextManager:
        """Held for the whole job (the webui's queue_lock), so txt2img cannot run on a model mid-training."""
        return contextlib.nullcontext()

    def task_queued(self, task_id: str) -> None:
        """The job is waiting for the GPU lock (progress bar shows 'queued')."""

    def begin(self, task_id: str, job: str) -> None:
        """The job owns the GPU: take over the webui's progress state."""

    def update(self, step: int, total: int, textinfo: str) -> None:
        """Progress for the webui's progress bar (step of total, one-line text)."""

    def end(self, task_id: str) -> None:
        """Always called after begin(), also on errors: release the progress state."""

    def interrupted(self) -> bool:
        """The webui's Interrupt button (or /sdapi/v1/interrupt) was pressed. Never True for a *Reload UI* or a
        browser reload: a training survives those (lifecycle.RestartWatch tells them apart)."""
        return False

    def stop_work(self) -> None:
        """The process is exiting: make the webui's own work in progress (a preview's sampling) stop early, so the
        job reaches its save in time."""

    def install_shutdown_hooks(self, on_shutdown: Callable[[str], None]) -> None:
        """Call `on_shutdown(reason)` before the process ends (Ctrl+C, SIGTERM, the webui's restart/stop, a normal
        exit), so a running job can save; see lifecycle.install_shutdown_hooks."""

    # ---- the webui's own Lora extension ----------------------------------------------------------------------
    def release_webui_loras(self, model) -> None:
        """Unload LoRAs the webui's Lora extension merged into the model, so training starts from clean weights."""

    def after_training(self, model) -> None:
        """Leave the model as it was (and drop cached prompt conditionings that used the training LoRA)."""

    def refresh_loras(self) -> None:
        """Re-list the Lora folder so new files show up as cards."""

    def reload_embeddings(self) -> None:
        """Re-read the embeddings folder, so a pivotal-tuning token works in txt2img at once."""

    def embeddings_dir(self) -> str:
        """The textual-inversion embeddings folder, or "" when there is none (then only the bundled copy)."""
        return ""

    # ---- previews --------------------------------------------------------------------------------------------
    def txt2img(self, prompt: str, negative_prompt: str, seed: int, steps: int, cfg_scale: float, width: int,
                height: int):
        """One image with the webui's own txt2img processing (PIL.Image), or None when it is not available."""
        return None

    def preview_embedding(self, embedding) -> ContextManager:
        """While previews run, the webui knows the pivotal-tuning token (`embedding`: name, vec, vectors, shape,
        the values trained so far); afterwards its embedding list is as before."""
        return contextlib.nullcontext()

    def show_preview(self, image) -> None:
        """Show an image as the progress bar's live preview."""

    # ---- captioning ------------------------------------------------------------------------------------------
    def captioners(self, blip: bool, deepbooru: bool) -> ContextManager[Captioners]:
        """Load the requested caption models, yield (name, fn(PIL) -> str) pairs, unload them after."""
        return contextlib.nullcontext([])

    # ---- settings and paths ----------------------------------------------------------------------------------
    def setting(self, key: str, default=None):
        return default

    def lora_dir(self) -> str:
        return os.path.abspath("models/Lora")

    def default_output_dir(self) -> str:
        return self.setting("train_lora_output_dir", "") or self.lora_dir()

    def api_credentials(self) -> Optional[Dict[str, str]]:
        """{user: password} from --api-auth, or None when the API is open."""
        return None
