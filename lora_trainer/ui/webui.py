"""The only module that touches the webui (`modules.*`, the built-in Lora extension's `networks`).

It implements `Host` for the job/tab/API and registers the extension's callbacks. Imported only from
scripts/train_lora.py, i.e. inside a running webui.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Dict, Optional

from lora_trainer.ui.host import Host

SECTION = ("train_lora", "Train LoRA")
# where the webui's interrogate.py / deepbooru.py look for (and download) the caption models
BLIP_FILE = "model_base_caption_capfilt_large.pth"
BLIP_URL = ("https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/"
            "model_base_caption_capfilt_large.pth")
DEEPBOORU_FILE = "model-resnet_custom_v3.pt"
DEEPBOORU_URL = "https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases/download/v1/model-resnet_custom_v3.pt"


class WebuiHost(Host):
    def __init__(self):
        self._task_id = ""  # set between begin() and end(): our job holds the GPU
        self._restart_watch = None

    def watch_restarts(self) -> None:
        """Before the UI is built (script load): the settings' Reload UI button binds `state.request_restart`."""
        from modules import shared

        from lora_trainer.ui.lifecycle import RestartWatch

        self._restart_watch = RestartWatch(shared.state, training=lambda: bool(self._task_id)).install()

    def stop_work(self) -> None:
        from modules import shared

        shared.state.interrupt()  # the sampler of a running preview checks it every step

    def install_shutdown_hooks(self, on_shutdown) -> None:
        from modules import restart

        from lora_trainer.ui.lifecycle import install_shutdown_hooks

        install_shutdown_hooks(on_shutdown, restart_module=restart)

    # ---- the model -------------------------------------------------------------------------------------------
    def model(self):
        from modules import sd_models

        return sd_models.model_data.sd_model  # not shared.sd_model: that property would load a checkpoint

    def model_title(self) -> str:
        info = getattr(self.model(), "sd_checkpoint_info", None)
        return getattr(info, "title", "") or ""

    def clip_skip(self) -> int:
        from modules import shared

        try:
            return max(1, int(shared.opts.CLIP_stop_at_last_layers))
        except (AttributeError, TypeError, ValueError):
            return 1

    def checkpoint_identity(self) -> Dict[str, str]:
        """From `sd_checkpoint_info`: `hash` is computed when the webui lists checkpoints (it reads 64 KB), `sha256`
        only exists once the webui has hashed the file (cache), and is never computed here (GBs to read)."""
        info = getattr(self.model(), "sd_checkpoint_info", None)
        if info is None:
            return {}
        identity = {"name": os.path.basename(getattr(info, "filename", "") or getattr(info, "name", "") or ""),
                    "hash": getattr(info, "hash", None) or "", "sha256": getattr(info, "sha256", None) or ""}
        return {key: str(value) for key, value in identity.items() if value}

    def unsupported_reason(self) -> str:
        from modules import devices, sd_unet, shared

        if getattr(shared.cmd_opts, "lowvram", False):
            return "the webui runs with --lowvram, which moves UNet blocks between devices mid-step; restart without it"
        if getattr(devices, "fp8", False):
            return "FP8 weight storage is on (Settings > Optimizations > FP8 weight); turn it off to train"
        if sd_unet.current_unet is not None:
            return "an alternative UNet (e.g. TensorRT) is active; set Settings > SD Unet to None"
        return ""

    # ---- GPU ownership and progress --------------------------------------------------------------------------
    def gpu_lock(self):
        from modules.call_queue import queue_lock

        return queue_lock

    def task_queued(self, task_id: str) -> None:
        from modules import progress

        progress.add_task_to_queue(task_id)

    def begin(self, task_id: str, job: str) -> None:
        from modules import progress, shared

        shared.state.begin(job=job)
        shared.state.job_count = 0
        progress.start_task(task_id)
        self._task_id = task_id

    def update(self, step: int, total: int, textinfo: str) -> None:
        from modules import shared

        state = shared.state
        if total:
            state.job_count, state.job_no = total, min(step, total)
        state.sampling_step, state.sampling_steps = 0, 0
        state.textinfo = textinfo

    def end(self, task_id: str) -> None:
        from modules import progress, shared

        self._task_id = ""
        shared.state.end()
        shared.state.interrupted = shared.state.stopping_generation = False
        progress.finish_task(task_id)

    def interrupted(self) -> bool:
        if self._restart_watch is not None:
            return self._restart_watch.interrupted()
        from modules import shared

        return bool(shared.state.interrupted or shared.state.stopping_generation)

    # ---- the built-in Lora extension -------------------------------------------------------------------------
    def release_webui_loras(self, model) -> None:
        """Empty Lora's loaded list and put back the original weights of every module it merged into, eagerly and
        under no_grad (a lazy restore during a grad-enabled forward would fail on leaf tensors)."""
        networks = sys.modules.get("networks")
        if networks is None or model is None:
            return
        import torch

        networks.loaded_networks.clear()
        with torch.no_grad():
            for module in model.modules():
                if getattr(module, "network_current_names", ()):
                    networks.network_restore_weights_from_backup(module)
                    networks.network_reset_cached_weight(module)
        self._drop_cond_cache()

    def after_training(self, model) -> None:
        self.release_webui_loras(model)
        self._drop_cond_cache()

    @staticmethod
    def _drop_cond_cache() -> None:
        """Cached prompt conditionings are keyed by prompt, not by LoRA weights: drop them after the text encoder
        changed (a preview with the training LoRA, or a LoRA re-saved under the same name)."""
        from modules import processing

        processing.StableDiffusionProcessing.cached_c = [None, None]
        processing.StableDiffusionProcessing.cached_uc = [None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]

    def reload_embeddings(self) -> None:
        from modules import sd_hijack

        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)

    def embeddings_dir(self) -> str:
        from modules import shared

        return getattr(shared.cmd_opts, "embeddings_dir", None) or ""

    @contextlib.contextmanager
    def preview_embedding(self, embedding):
        from modules import sd_hijack
        from modules.textual_inversion.textual_inversion import Embedding

        if embedding is None:
            yield
            return
        db, model = sd_hijack.model_hijack.embedding_db, self.model()
        previous = db.word_embeddings.get(embedding.name)  # e.g. an older <token>.safetensors from the folder
        vec = embedding.vec
        vec = {k: v.detach() for k, v in vec.items()} if isinstance(vec, dict) else vec.detach()
        shown = Embedding(vec, embedding.name)
        shown.vectors, shown.shape, shown.shorthash = embedding.vectors, embedding.shape, "training"
        db.register_embedding(shown, model)
        try:
            yield
        finally:
            db.register_embedding_by_name(previous, model, embedding.name)  # None unregisters it

    def refresh_loras(self) -> None:
        networks = sys.modules.get("networks")
        if networks is not None:
            networks.list_available_networks()

    # ---- previews --------------------------------------------------------------------------------------------
    def txt2img(self, prompt, negative_prompt, seed, steps, cfg_scale, width, height):
        from modules import processing, shared

        title = self.model_title()
        state = shared.state
        job_no, job_count = state.job_no, state.job_count
        self._drop_cond_cache()  # the same prompt with another LoRA weight must be encoded again
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=self.model(), prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
            cfg_scale=cfg_scale, width=width, height=height, batch_size=1, n_iter=1,
            sampler_name=self.setting("train_lora_preview_sampler", "Euler a"),
            do_not_save_samples=True, do_not_save_grid=True,
            # pin the checkpoint: a dropdown change while training must not swap the model under the preview
            override_settings={"sd_model_checkpoint": title} if title else {},
            override_settings_restore_afterwards=True)
        p.disable_extra_networks = True  # the webui's Lora must not load anything into the model being trained
        p.do_not_reload_embeddings = True
        try:
            with contextlib.closing(p):
                processed = processing.process_images(p)
        finally:
            state.job_no, state.job_count = job_no, job_count  # process_images counts its own jobs
            shared.total_tqdm.clear()  # its console bar sized itself from our step count
            self._drop_cond_cache()
        return processed.images[0] if processed.images else None

    def show_preview(self, image) -> None:
        from modules import shared

        shared.state.assign_current_image(image)

    # ---- captioning ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def captioners(self, blip: bool, deepbooru: bool):
        from modules import devices, shared

        keep = bool(self.setting("train_lora_keep_caption_models", False))
        pairs = []
        interrogator = shared.interrogator
        try:
            if blip:
                pairs.append(("BLIP", self._load_blip(interrogator)))
            if deepbooru:
                from modules import deepbooru as deepbooru_module

                self._start_deepbooru(deepbooru_module)
                pairs.append(("DeepBooru",
                              lambda img: deepbooru_module.model.tag_multi(img, force_disable_ranks=True)))
            yield pairs
        finally:
            if blip:
                interrogator.send_blip_to_ram()
                if not keep:
                    interrogator.blip_model = None
            if deepbooru:
                from modules import deepbooru as deepbooru_module

                if deepbooru_module.model.model is not None:
                    deepbooru_module.model.stop()
                    if not keep:
                        deepbooru_module.model.model = None
            devices.torch_gc()

    @staticmethod
    def _load_blip(interrogator):
        """BLIP alone: the webui's `load()` would also load CLIP ViT-L (a 1.7 GB download) that captions don't use.
        Its failures (offline: modelloader finds no file and `files[0]` raises IndexError) name the file's place."""
        from modules import devices, paths, shared

        from lora_trainer.ui.captioning import CaptionModelError

        if interrogator.blip_model is None:
            try:
                interrogator.blip_model = interrogator.load_blip_model()
            except Exception as exc:
                raise CaptionModelError(
                    "BLIP", exc, os.path.join(paths.models_path, "BLIP", BLIP_FILE), BLIP_URL,
                    extra="BLIP also needs the 'bert-base-uncased' tokenizer in the Hugging Face cache "
                          "(downloaded with it on first use).") from exc
            if not shared.cmd_opts.no_half and not interrogator.running_on_cpu:
                interrogator.blip_model = interrogator.blip_model.half()
        interrogator.blip_model = interrogator.blip_model.to(devices.device_interrogate)
        interrogator.dtype = next(interrogator.blip_model.parameters()).dtype
        return interrogator.generate_caption

    @staticmethod
    def _start_deepbooru(deepbooru_module):
        from modules import paths

        from lora_trainer.ui.captioning import CaptionModelError

        try:
            deepbooru_module.model.start()
        except Exception as exc:
            deepbooru_module.model.model = None  # a half-loaded model must not look loaded next time
            raise CaptionModelError("DeepBooru", exc, os.path.join(paths.models_path, "torch_deepdanbooru",
                                                                   DEEPBOORU_FILE), DEEPBOORU_URL) from exc

    # ---- settings and paths ----------------------------------------------------------------------------------
    def setting(self, key: str, default=None):
        from modules import shared

        return shared.opts.data.get(key, default)

    def lora_dir(self) -> str:
        from modules import paths, shared

        return getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora")

    def api_credentials(self) -> Optional[Dict[str, str]]:
        from modules import shared

        from lora_trainer.ui.api import parse_api_auth

        return parse_api_auth(getattr(shared.cmd_opts, "api_auth", None))


# ---- callbacks ----------------------------------------------------------------------------------------------
_host: Optional[WebuiHost] = None
_host_class = WebuiHost  # ForgeHost (ui/forge.py) in Forge: set by register_callbacks
# Kept across "Reload UI": this module stays in sys.modules (the webui re-runs scripts/, not our package), the
# RestartWatch keeps the reload's interrupt from stopping the job, and the new page re-attaches by itself.
_runner = None


def runner():
    global _host, _runner
    if _runner is None:
        from lora_trainer.ui.job import JobRunner

        _host = _host_class()
        _runner = JobRunner(_host)
        try:
            _host.watch_restarts()
            _host.install_shutdown_hooks(_runner.shutdown)
        except Exception as exc:  # noqa: BLE001 - the tab still works; only the reload/exit safety is missing
            print(f"Train LoRA: could not watch the webui's reload/exit: {exc}")
    return _runner


def on_ui_settings() -> None:
    import gradio as gr
    from modules import sd_samplers, shared

    def add(key, info):
        shared.opts.add_option(key, info)

    def option(default, label, **kwargs):
        return shared.OptionInfo(default, label, section=SECTION, category_id="training", **kwargs)

    add("train_lora_output_dir", option("", "Default output folder for trained LoRAs").info(
        f"empty = the webui's Lora folder ({WebuiHost().lora_dir()}, set by --lora-dir)"))
    add("train_lora_caption_extension", option(".txt", "Default caption file extension"))
    add("train_lora_keep_caption_models", option(False, "Keep BLIP / DeepBooru loaded after captioning").info(
        "off = free their memory when captioning ends"))
    add("train_lora_preview_sampler", option("Euler a", "Sampler for training previews", component=gr.Dropdown,
                                             component_args=lambda: {"choices": sd_samplers.visible_sampler_names()}))
    add("train_lora_card_preview", option(True, "Use the last training preview as the Lora card image"))
    add("train_lora_send_weight", option(0.8, "LoRA weight for 'Send to txt2img'", component=gr.Slider,
                                         component_args={"minimum": 0.0, "maximum": 2.0, "step": 0.05}))


def on_ui_tabs():
    from lora_trainer.ui.tab import build_tab

    return [(build_tab(runner()), "Train LoRA", "train_lora")]


def on_app_started(demo, app) -> None:
    from lora_trainer.ui.api import register_routes

    register_routes(app, runner())


def register_callbacks(host_class=None) -> None:
    global _host_class
    from modules import script_callbacks

    _host_class = host_class or WebuiHost
    runner()  # now, at script load: before the settings page binds its Reload UI button (see watch_restarts)
    script_callbacks.on_ui_settings(on_ui_settings, name="train_lora_settings")
    script_callbacks.on_ui_tabs(on_ui_tabs, name="train_lora_tab")
    script_callbacks.on_app_started(on_app_started, name="train_lora_api")
