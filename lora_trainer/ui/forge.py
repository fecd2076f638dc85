"""The Forge host (lllyasviel/stable-diffusion-webui-forge): what differs from A1111 1.10, over `WebuiHost`.

Forge keeps A1111's `modules.*` API for the tab, the progress state, processing, the interrogator and the Lora
extension (its sd_forge_lora is also imported as `networks`), so most of the host is shared. What differs:
- the model: `sd_models.model_data.sd_model` is a `ForgeDiffusionEngine` once a generation loaded it (a
  `FakeInitialModel` before: nothing to train yet);
- the model's memory and LoRAs: Forge's memory manager and patchers (forge_session.py);
- the prompt cache: Forge's `cached_c` entries have three fields;
- previews must not let a changed checkpoint dropdown reload the model mid-run (Forge reloads at generation time).
Imported only from scripts/train_lora.py when the running webui is Forge.
"""

from __future__ import annotations

import contextlib
import os
import sys

from lora_trainer.ui.webui import WebuiHost


def running_forge() -> bool:
    """Forge's tree has `backend/` and `modules_forge/` next to `modules/`."""
    if "modules_forge" in sys.modules or "backend.memory_management" in sys.modules:
        return True
    try:
        from modules import paths
    except ImportError:
        return False
    root = getattr(paths, "script_path", "")
    return os.path.isdir(os.path.join(root, "modules_forge")) and os.path.isdir(os.path.join(root, "backend"))


class ForgeHost(WebuiHost):
    def __init__(self):
        super().__init__()
        self._session = None
        self._loaded_params = None

    # ---- the model -------------------------------------------------------------------------------------------
    def model(self):
        from modules import sd_models

        model = sd_models.model_data.sd_model
        return model if getattr(model, "forge_objects", None) is not None else None

    def model_title(self) -> str:
        info = getattr(self.model(), "sd_checkpoint_info", None)
        return getattr(info, "title", "") or ""

    def no_model_message(self) -> str:
        return ("No checkpoint is loaded in Forge yet: Forge loads the checkpoint picked at the top when it first "
                "generates. Generate one image in txt2img, then start the training.")

    def unsupported_reason(self) -> str:
        from backend import args, memory_management

        from lora_trainer.ui.forge_session import unsupported_reason

        return unsupported_reason(self.model(), memory_management, args.args)

    # ---- memory and LoRAs ------------------------------------------------------------------------------------
    def release_webui_loras(self, model) -> None:
        """Called by the job right before training: unpatch Forge's LoRAs, load the parts fully on the device."""
        from backend import memory_management
        from modules import sd_models

        from lora_trainer.ui.forge_session import ForgeSession, loaded_parameters

        if model is None:
            return
        self._loaded_params = loaded_parameters(sd_models.model_data)
        self._session = ForgeSession(model, memory_management)
        try:
            self._session.begin()
        finally:
            for line in self._session.log:
                print(f"[Train LoRA] {line}")
        self._drop_cond_cache()

    def after_training(self, model) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.end()
        self._drop_cond_cache()

    @staticmethod
    def _drop_cond_cache() -> None:
        from modules import processing

        processing.StableDiffusionProcessing.cached_c = [None, None, None]
        processing.StableDiffusionProcessing.cached_uc = [None, None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None, None]

    # ---- previews --------------------------------------------------------------------------------------------
    def txt2img(self, prompt, negative_prompt, seed, steps, cfg_scale, width, height):
        """Forge's own processing; the loading parameters of the model being trained are put back for the
        preview, so a checkpoint picked in the dropdown meanwhile is not loaded until the run ends."""
        from modules import sd_models

        data = sd_models.model_data
        chosen = data.forge_loading_parameters
        if self._loaded_params is not None:
            data.forge_loading_parameters = self._loaded_params
        try:
            return super().txt2img(prompt, negative_prompt, seed, steps, cfg_scale, width, height)
        finally:
            data.forge_loading_parameters = chosen

    # ---- textual-inversion embeddings (pivotal tuning) --------------------------------------------------------
    # Forge has no `sd_hijack.model_hijack.embedding_db`: each text-processing engine of the loaded model holds its
    # own EmbeddingDatabase (backend/text_processing), and the extra-networks page keeps one more for the cards.
    def _embedding_dbs(self) -> list:
        model = self.model()
        engines = [getattr(model, name, None) for name in
                   ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")]
        return [engine.embeddings for engine in engines if getattr(engine, "embeddings", None) is not None]

    def reload_embeddings(self) -> None:
        for db in self._embedding_dbs():
            db.load_textual_inversion_embeddings()
        cards = sys.modules.get("modules.ui_extra_networks_textual_inversion")
        if cards is not None:
            cards.embedding_db.load_textual_inversion_embeddings(force_reload=True, sync_with_sd_model=False)

    @contextlib.contextmanager
    def preview_embedding(self, embedding):
        """The vectors being trained, registered in every engine's database for a preview, then put back."""
        if embedding is None:
            yield
            return
        from backend.text_processing.textual_inversion import Embedding

        vec = embedding.vec
        vec = {k: v.detach() for k, v in vec.items()} if isinstance(vec, dict) else vec.detach()
        shown = Embedding(vec, embedding.name)
        shown.vectors, shown.shape = embedding.vectors, embedding.shape
        previous = []
        for db in self._embedding_dbs():
            previous.append((db, db.word_embeddings.get(embedding.name)))
            db.register_embedding(shown)
        try:
            yield
        finally:
            for db, before in previous:
                db.register_embedding_by_name(before, embedding.name)  # None unregisters it
