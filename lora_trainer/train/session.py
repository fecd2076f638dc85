"""Everything a run needs, set up in order (phase "preparing", then "caching"), and torn down in `close()`."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Callable, List, Optional

import torch

from ..arch.adapters import ModelAdapter
from ..prompts import EmphasisError, PromptOptions
from .attention import FusedAttention
from .batches import TextEncoderCache
from .caption_length import long_caption_warning
from .checkpointing import GradientCheckpointing
from .errors import Cancelled, TrainError
from .loss_weights import training_alphas_cumprod
from .optimizers import build_optimizer
from .precision import resolve_precision
from .saving import RunInfo, existing, planned_files
from .schedulers import build_scheduler
from .state import load_state, set_rng_states

logger = logging.getLogger(__name__)


def dataset_options(config, resolution: int):
    from ..dataset import DatasetOptions

    c = config
    max_bucket = c.max_bucket_reso or 2 * resolution
    return DatasetOptions(
        resolution=resolution, enable_bucket=c.enable_bucket, min_bucket_reso=min(c.min_bucket_reso, resolution),
        max_bucket_reso=max(max_bucket, resolution), bucket_reso_steps=c.bucket_reso_steps,
        bucket_no_upscale=c.bucket_no_upscale, caption_extension=c.caption_extension,
        shuffle_caption=c.shuffle_caption, keep_tokens=c.keep_tokens,
        caption_tag_dropout_rate=c.caption_tag_dropout_rate,
        caption_dropout_rate=c.caption_dropout_rate, caption_dropout_every_n_epochs=c.caption_dropout_every_n_epochs,
        trigger_word=c.trigger_word, flip_aug=c.flip_aug, random_crop=c.random_crop, batch_size=c.train_batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps, prior_loss_weight=c.prior_loss_weight,
        epochs=None if c.max_train_steps else c.max_train_epochs, max_steps=c.max_train_steps or None)


class Session:
    def __init__(self, model, config, adapter: ModelAdapter, device, emit: Callable, log: Callable, cancel=None):
        self.model, self.config, self.adapter = model, config, adapter
        self.cancel = cancel
        self.emit, self.log = emit, log
        if device is None and adapter.lowvram and torch.cuda.is_available():
            device = "cuda"  # --medvram parks the UNet on the CPU between calls; it runs on the GPU
        self.device = torch.device(device) if device is not None else adapter.unet_device
        self.run = RunInfo()
        self.files: List[Path] = []
        self.state_dirs: List[Path] = []
        self.report = None
        self.network = None
        self.optimizer = None
        self.latent_cache = None
        self.text_cache: Optional[TextEncoderCache] = None
        self.prompts = PromptOptions.from_config(config)  # captions chunked / weighted as the webui's prompts
        if config.clip_skip == 0:  # "follow the webui" without one (CLI): the webui's default, 1
            config.clip_skip = 1
        self.checkpointing: Optional[GradientCheckpointing] = None
        self.attention: Optional[FusedAttention] = None
        self.start_step = 0
        self.pivotal = None  # PivotalRun when pivotal tuning is on

    # ---- set-up ---------------------------------------------------------------------------------------------------
    def prepare(self) -> Session:
        c, adapter = self.config, self.adapter
        self.output_dir = Path(c.output_dir).expanduser() if c.output_dir else None
        if self.output_dir is None:
            raise TrainError("output_dir: choose the folder to save the LoRA in")
        if adapter.lowvram and c.train_text_encoder:
            raise TrainError("train_text_encoder: the webui runs with --medvram/--lowvram, which moves the text "
                             "encoder off the GPU while the UNet runs; untick 'Train text encoder' (or restart the "
                             "webui without those flags)")
        self.precision = resolve_precision(c.mixed_precision, self.device, adapter.unet_dtype)
        if self.precision.note:
            self.log(self.precision.note)
        from ..pivotal.options import config_warnings

        for warning in config_warnings(c):
            self.log(f"warning: {warning}")
        self.resolution = c.resolution or adapter.native_resolution
        self._scan_dataset()
        self._prepare_latents()
        self._schedule()
        self._build_network()
        self._build_optimizer()
        if c.resume_state:
            self._resume(Path(c.resume_state).expanduser())
        self._check_outputs()
        if not c.train_text_encoder and self.pivotal is None:  # pivotal vectors change every step
            self.text_cache = TextEncoderCache(adapter, c.clip_skip, prompts=self.prompts)
            if c.cache_text_encoder_outputs:
                self._precompute_text()
        adapter.begin_training()
        self.checkpointing = GradientCheckpointing(adapter.unet)
        if c.gradient_checkpointing:
            self.checkpointing.enable()
        self.attention = FusedAttention(adapter.unet)
        if self.device.type == "cuda":  # flash / mem-efficient kernels; on CPU it measured ~5 % slower (bench/)
            self.attention.enable()
        if self.attention.count:
            self.log(f"fused attention (torch SDPA) for {self.attention.count} stock ldm attention layers")
        self.alphas_cumprod = training_alphas_cumprod(adapter, c, self.device, self.log)  # zero_terminal_snr
        return self

    def _scan_dataset(self):
        from ..dataset import scan_dataset

        c = self.config
        self.options = dataset_options(c, self.resolution)
        self.emit("preparing", message=f"Scanning {c.train_dir}")
        try:
            dataset = scan_dataset(c.train_dir, c.reg_dir or None, self.options)
        except ValueError as exc:
            raise TrainError(f"dataset: {exc}") from exc
        self.report = dataset.report
        if not dataset.report.ok:
            raise TrainError(f"train_dir: {dataset.report.fix or 'no usable images found'}")
        self.items = list(dataset.items)
        for line in dataset.report.warnings:
            self.log(f"dataset: {line}")
        try:
            warning = long_caption_warning(self.adapter, {item.path: item for item in self.items}.values(),
                                           c.trigger_word, self.prompts)
        except EmphasisError as exc:
            raise TrainError(f"weighted_captions: {exc}") from exc
        if warning:
            self.log(f"dataset: {warning}")

    def _prepare_latents(self):
        c = self.config
        self.cache_latents = bool(c.cache_latents)
        if self.cache_latents and c.random_crop:
            self.log("random_crop needs a new crop every step, so latents are not cached")
            self.cache_latents = False
        if not self.cache_latents:
            return
        from ..dataset import LatentCache, default_cache_dir

        cache_dir = default_cache_dir(c.train_dir) if c.cache_latents_to_disk else None
        self.latent_cache = LatentCache(lambda images: self.adapter.encode_images(images, self.device),
                                        self.adapter.vae_fingerprint(), cache_dir)
        torch.manual_seed(c.seed)  # the VAE samples its posterior: cached latents are reproducible per seed

        def on_progress(done: int, total: int):
            self.emit("caching", step=done, total_steps=total, message=f"Caching latents {done}/{total}")
            if self.cancel is not None and self.cancel.cancelled:
                raise Cancelled("Cancelled while caching latents; nothing was trained or saved.")

        failures = self.latent_cache.prepare(self.items, c.flip_aug, on_progress)
        if failures:
            bad = {id(item) for item, _ in failures}
            self.items = [item for item in self.items if id(item) not in bad]
            for _item, reason in failures:
                self.log(f"skipped (cannot be read): {reason}")
            if not any(not item.is_reg for item in self.items):
                raise TrainError("train_dir: none of the images could be read (see the log)")
        self.latent_cache.release_encoder()

    def _schedule(self):
        from ..dataset import BucketBatchSampler, compute_steps

        c = self.config
        self.sampler = BucketBatchSampler(self.items, c.train_batch_size, c.seed)
        self.batches_per_epoch = len(self.sampler)
        self.steps_per_epoch, self.total_steps, self.epochs = compute_steps(
            self.batches_per_epoch, c.gradient_accumulation_steps,
            None if c.max_train_steps else c.max_train_epochs, c.max_train_steps or None)
        if self.total_steps <= 0:
            raise TrainError("train_dir: the dataset gives no training steps")

    def _build_network(self):
        from ..lora_net import LoRANetwork

        c = self.config
        self.emit("preparing", message="Creating the LoRA network")
        network = LoRANetwork.create(
            self.model, arch=self.adapter.arch, rank=c.network_dim, alpha=c.network_alpha, conv_rank=c.conv_dim,
            conv_alpha=c.conv_alpha, dropout=c.network_dropout, train_unet=c.train_unet,
            train_text_encoder=c.train_text_encoder, multiplier=1.0)
        if c.network_weights:
            self._load_start_weights(network, Path(c.network_weights).expanduser())
        self.network = network.to(self.device)
        # Frozen base: only LoRA weights get gradients (the webui leaves the UNet's requires_grad on).
        self.adapter.root_module.requires_grad_(False)
        self.network.train()
        self.network.attach()

    def _load_start_weights(self, network, path: Path):
        from ..lora_file import LoRAFormatError, load_lora

        try:
            tensors, _ = load_lora(path)
            tensors = {k: v for k, v in tensors.items() if not k.startswith("bundle_emb.")}  # pivotal embeddings
            result = network.load_kohya_state_dict(tensors, strict=False)
        except (OSError, LoRAFormatError) as exc:
            raise TrainError(f"network_weights: cannot start from {path}: {exc}") from exc
        if result.get("unexpected"):
            self.log(f"network_weights: {len(result['unexpected'])} module(s) of {path.name} are not trained in "
                     f"this run and are left out (e.g. {result['unexpected'][0]})")
        self.log(f"starting from {path.name}")

    def _build_optimizer(self):
        from ..pivotal.run import PivotalRun
        from .prodigy import apply_group_weight_decay, check_prodigy_groups, prodigy_args

        c = self.config
        groups = apply_group_weight_decay(c, self.network.param_groups(c.unet_lr, c.text_encoder_lr))
        self.pivotal = PivotalRun.start(self)
        if self.pivotal is not None:
            groups.insert(0, self.pivotal.param_group())  # before the UNet group (the loop shows the last one)
        if not groups:
            raise TrainError("unet_lr: every trained part has learning rate 0, so nothing would be trained")
        check_prodigy_groups(c, groups)
        self.trainable = [p for g in groups for p in g["params"]]
        self.optimizer, self.optimizer_description = build_optimizer(c.optimizer, groups, prodigy_args(c))
        self.scheduler = build_scheduler(c.lr_scheduler, self.optimizer, total_steps=self.total_steps,
                                         warmup_steps=c.warmup_steps(self.total_steps),
                                         num_cycles=c.lr_scheduler_num_cycles, power=c.lr_scheduler_power)
        self.scaler = self.precision.grad_scaler()

    def _resume(self, folder: Path):
        from ..lora_file import LoRAFormatError

        meta, tensors = load_state(folder)
        if self.pivotal is not None:
            tensors = self.pivotal.load_bundle(tensors)
        try:
            self.network.load_kohya_state_dict(tensors, strict=True)
        except LoRAFormatError as exc:
            sdxl = " (SDXL trains the UNet only unless 'SDXL: UNet only' is off)" if self.adapter.arch == "sdxl" else ""
            raise TrainError(f"resume_state: {folder.name} holds another network than this run{sdxl}: {exc}") from exc
        try:
            self.optimizer.load_state_dict(meta["optimizer"])
            self.scheduler.load_state_dict(meta["scheduler"])
        except (ValueError, KeyError) as exc:
            raise TrainError(f"resume_state: {folder.name} does not match this run's optimizer/network settings "
                             f"({exc}); resume with the settings it was saved with") from exc
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        set_rng_states(meta["rng"])
        self.start_step = int(meta["step"])
        if meta.get("seed") != self.config.seed:
            self.log(f"resume: the state was trained with seed {meta.get('seed')}, this run uses "
                     f"{self.config.seed}; the continuation will differ from the original run")
        if self.start_step >= self.total_steps:
            raise TrainError(f"resume_state: {folder.name} already has {self.start_step} steps and this run has "
                             f"{self.total_steps}; raise the epochs or max_train_steps to continue")
        self.log(f"resuming from {folder.name} at step {self.start_step}")

    def _check_outputs(self):
        c = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if c.overwrite:
            return
        planned = planned_files(self.output_dir, c.output_name, steps_per_epoch=self.steps_per_epoch,
                                total_steps=self.total_steps, epochs=self.epochs, every_n_epochs=c.save_every_n_epochs,
                                every_n_steps=c.save_every_n_steps, start_step=self.start_step)
        clash = existing(planned)
        if clash is not None:
            raise TrainError(f"output_name: {clash} already exists; choose another output name or turn on "
                             "'overwrite'")

    def _precompute_text(self):
        from ..dataset import process_caption

        c = self.config
        if c.shuffle_caption or c.caption_dropout_rate or c.caption_tag_dropout_rate:
            raise TrainError("cache_text_encoder_outputs: captions change every step (shuffle_caption or caption "
                             "dropout is on), so text-encoder outputs cannot be cached; turn one of them off")
        captions = sorted({process_caption(item.caption, self.options, random.Random(0), 1, is_reg=item.is_reg)
                           for item in self.items})
        if c.caption_dropout_every_n_epochs:
            captions.append("")
        self.emit("caching", message=f"Caching text-encoder outputs for {len(captions)} captions")
        with self.precision.autocast():
            for start in range(0, len(captions), 16):
                self.text_cache.encode(captions[start:start + 16])

    # ---- tear-down ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Undo what prepare() did to the model and drop everything training allocated (the guard restores the
        rest). Safe after a partial prepare()."""
        if self.checkpointing is not None:
            self.checkpointing.remove()
        if self.attention is not None:
            self.attention.remove()
        if self.network is not None:
            self.network.detach()
        self.adapter.end_training()
        if self.optimizer is not None:
            self.optimizer.state.clear()
        if self.text_cache is not None:
            self.text_cache.clear()
        self.optimizer = self.scheduler = self.scaler = self.latent_cache = self.text_cache = None
        self.trainable = []
