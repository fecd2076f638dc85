"""The tab's fields, as data: `FIELDS` is the single list the tab builds its inputs from (in this order),
docs/OPTIONS.md documents, and form.values_to_config reads back. Every TrainConfig field appears here exactly once
(a test checks it). Pure Python: no gradio, no webui.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

from lora_trainer.config import HUBER_SCHEDULES, LOSS_TYPES, OPTIMIZERS, PRECISIONS, SAVE_PRECISIONS, SCHEDULERS
from lora_trainer.prompts import MAX_TOKEN_LENGTHS

SECTIONS = ("dataset", "network", "training", "previews", "output")
SCHEDULE_CHOICES = ("Epochs", "Steps")


@dataclass(frozen=True)
class Field:
    key: str  # a TrainConfig field, or one of UI_ONLY_DEFAULTS
    label: str  # unique: the webui saves tab values in ui-config.json keyed by label
    kind: str  # text | textarea | int | float | bool | choice | radio
    section: str
    info: str = ""
    choices: tuple = ()
    advanced: bool = False  # shown in the section's closed "Advanced" accordion


UI_ONLY_DEFAULTS = {"schedule_by": "Epochs"}

FIELDS: List[Field] = [
    # 1) dataset
    Field("train_dir", "Training images folder", "text", "dataset",
          "kohya layout: FOLDER/10_name/*.png + .txt (10 = repeats per epoch). A flat folder of images works too."),
    Field("reg_dir", "Regularisation images folder", "text", "dataset", "Optional; same layout (1_person/...)."),
    Field("trigger_word", "Trigger word", "text", "dataset",
          "Put in front of every training caption that lacks it (never on regularisation images); also added by "
          "'Send to txt2img'."),
    Field("caption_extension", "Caption file extension", "text", "dataset"),
    Field("shuffle_caption", "Shuffle caption tags", "bool", "dataset", advanced=True),
    Field("keep_tokens", "Keep first N tags in place", "int", "dataset", "Tags never shuffled or dropped.",
          advanced=True),
    Field("caption_dropout_rate", "Caption dropout rate", "float", "dataset", "Chance to train an image with an "
          "empty caption.", advanced=True),
    Field("caption_tag_dropout_rate", "Tag dropout rate", "float", "dataset", advanced=True),
    Field("caption_dropout_every_n_epochs", "Drop all captions every N epochs", "int", "dataset", "0 = never.",
          advanced=True),
    Field("flip_aug", "Random horizontal flip", "bool", "dataset", "Not for asymmetric subjects (text, logos).",
          advanced=True),
    Field("random_crop", "Random crop", "bool", "dataset", advanced=True),
    Field("prior_loss_weight", "Regularisation loss weight", "float", "dataset", advanced=True),
    # 2) network
    Field("output_name", "LoRA name", "text", "network", "File name without extension; also the <lora:NAME> tag."),
    Field("network_dim", "Rank (dim)", "int", "network", "Capacity: 8-32 for characters, 32-64 for styles."),
    Field("network_alpha", "Alpha", "float", "network", "Strength scale = alpha / rank."),
    Field("conv_dim", "Conv rank", "int", "network", "0 = attention layers only (LoRA); > 0 also ResNet convs "
          "(LoCon)."),
    Field("conv_alpha", "Conv alpha", "float", "network"),
    Field("network_dropout", "Network dropout", "float", "network", "Dropout on the LoRA down projection.",
          advanced=True),
    Field("network_weights", "Start from LoRA file", "text", "network",
          "Optional path to a .safetensors LoRA to continue training."),
    Field("train_unet", "Train the UNet", "bool", "network", advanced=True),
    Field("train_text_encoder", "Train the text encoder", "bool", "network", advanced=True),
    Field("sdxl_unet_only", "SDXL: UNet only", "bool", "network", "On SDXL the text encoders are not trained even "
          "when 'Train the text encoder' is ticked (kohya's SDXL advice). Untick to train them.", advanced=True),
    # 3) training
    Field("schedule_by", "Train for", "radio", "training", choices=SCHEDULE_CHOICES),
    Field("max_train_epochs", "Epochs", "int", "training"),
    Field("max_train_steps", "Steps", "int", "training", "Used when 'Train for' is Steps."),
    Field("train_batch_size", "Batch size", "int", "training"),
    Field("gradient_accumulation_steps", "Gradient accumulation steps", "int", "training", advanced=True),
    Field("unet_lr", "UNet learning rate", "float", "training"),
    Field("text_encoder_lr", "Text encoder learning rate", "float", "training"),
    Field("optimizer", "Optimizer", "choice", "training", "8bit variants need bitsandbytes, Prodigy needs prodigyopt.",
          choices=OPTIMIZERS),
    Field("optimizer_args", "Optimizer arguments", "text", "training",
          'Extra keyword arguments: weight_decay=0.01 betas=0.9,0.99 or JSON {"weight_decay": 0.01}.', advanced=True),
    Field("lr_scheduler", "LR scheduler", "choice", "training", choices=SCHEDULERS),
    Field("lr_warmup_steps", "Warmup steps", "float", "training", "Steps, or a fraction of all steps if below 1."),
    Field("lr_scheduler_num_cycles", "Scheduler cycles", "int", "training", "For cosine_with_restarts.",
          advanced=True),
    Field("lr_scheduler_power", "Scheduler power", "float", "training", "For polynomial.", advanced=True),
    Field("resolution", "Resolution", "int", "training", "0 = the model's native size (512 SD1/SD2, 768 SD2-v, "
          "1024 SDXL)."),
    Field("enable_bucket", "Aspect-ratio bucketing", "bool", "training"),
    Field("min_bucket_reso", "Min bucket side", "int", "training", advanced=True),
    Field("max_bucket_reso", "Max bucket side", "int", "training", "0 = 2 x resolution.", advanced=True),
    Field("bucket_reso_steps", "Bucket step", "int", "training", advanced=True),
    Field("bucket_no_upscale", "Never upscale into a bucket", "bool", "training", advanced=True),
    Field("min_snr_gamma", "Min-SNR gamma", "float", "training", "0 = off; 5 is the paper's value."),
    Field("zero_terminal_snr", "Zero terminal SNR", "bool", "training", "Rescale the noise schedule so the last "
          "step is pure noise; for v-prediction models.", advanced=True),
    Field("scale_v_pred_loss_like_noise_pred", "Scale v-pred loss like noise pred", "bool", "training",
          "v-prediction: weight the loss by SNR/(SNR+1) (kohya).", advanced=True),
    Field("v_pred_like_loss", "v-pred-like loss", "float", "training", "0 = off; adds loss·w/scale (kohya).",
          advanced=True),
    Field("debiased_estimation_loss", "Debiased estimation loss", "bool", "training",
          "Weight the loss by 1/√SNR (ε) or 1/(SNR+1) (v).", advanced=True),
    Field("noise_offset", "Noise offset", "float", "training", "0 = off; ~0.05 helps very dark/bright images."),
    Field("mixed_precision", "Precision", "choice", "training",
          "auto = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU.", choices=PRECISIONS),
    Field("gradient_checkpointing", "Gradient checkpointing", "bool", "training", "Less VRAM, ~20% slower."),
    Field("cache_latents", "Cache latents", "bool", "training", "Encode every image once (not with random crop)."),
    Field("cache_latents_to_disk", "Cache latents to disk", "bool", "training", advanced=True),
    Field("cache_text_encoder_outputs", "Cache text encoder outputs", "bool", "training",
          "Only when the text encoder is not trained.", advanced=True),
    Field("refuse_if_wont_fit", "Refuse when the plan says it won't fit", "bool", "training",
          "Off = only warn: the memory plan is an estimate."),
    Field("seed", "Seed", "int", "training"),
    # a new label: ui-config.json keeps the old "Clip skip" value (1) and would pin every run to it
    Field("clip_skip", "Clip skip (0 = webui setting)", "int", "training", "0 follows the webui's Clip skip (SD1; "
          "shown beside the model); 1-12 overrides.", advanced=True),
    # issue 11: captions encoded as the webui encodes prompts
    Field("max_token_length", "Max caption tokens", "choice", "training", "Captions are encoded in 75-token "
          "chunks like webui prompts; longer text is cut.", choices=MAX_TOKEN_LENGTHS, advanced=True),
    Field("weighted_captions", "Weighted captions", "bool", "training", "Read (tag:1.2), (tag), [tag] and \\( "
          "escapes as the webui reads prompts. Off: brackets are text.", advanced=True),
    Field("max_grad_norm", "Max gradient norm", "float", "training", "0 = no clipping.", advanced=True),
    Field("loss_type", "Loss", "choice", "training", choices=LOSS_TYPES, advanced=True),
    Field("huber_c", "Huber c", "float", "training", advanced=True),
    Field("huber_schedule", "Huber schedule", "choice", "training", choices=HUBER_SCHEDULES, advanced=True),
    Field("min_timestep", "Min timestep", "int", "training", advanced=True),
    Field("max_timestep", "Max timestep", "int", "training", advanced=True),
    # prodigy (applies when the optimizer is Prodigy)
    Field("prodigy_d_coef", "Prodigy d_coef", "float", "training", "Prodigy only: scales its step-size estimate; "
          "below 1 learns more gently. Keep the learning rates at 1.0.", advanced=True),
    Field("prodigy_safeguard_warmup", "Prodigy safeguard_warmup", "bool", "training",
          "Prodigy only: avoids an over-large estimate during warm-up (HF SDXL recipe: on).", advanced=True),
    Field("prodigy_use_bias_correction", "Prodigy use_bias_correction", "bool", "training",
          "Prodigy only: Adam's bias correction (HF SDXL recipe: on).", advanced=True),
    Field("prodigy_decouple", "Prodigy decoupled weight decay", "bool", "training", "Prodigy only: AdamW-style.",
          advanced=True),
    Field("prodigy_weight_decay", "Prodigy weight decay (UNet)", "float", "training",
          "Prodigy only (HF SDXL recipe: 1e-4).", advanced=True),
    Field("prodigy_te_weight_decay", "Prodigy weight decay (text encoder)", "float", "training",
          "Prodigy only; also the pivotal embeddings' (HF SDXL recipe: 1e-3). Negative = as the UNet.",
          advanced=True),
    # pivotal tuning (network section: it trains new token embeddings with the LoRA)
    Field("pivotal_tuning", "Pivotal tuning (train a new token with the LoRA)", "bool", "network",
          "Trains new embedding vectors for the token below, bundled in the LoRA file (the webui loads them with "
          "<lora:NAME>) and saved as an embedding file."),
    Field("pivotal_token", "Pivotal token", "text", "network", "The word you will type, e.g. zkw (letters, "
          "digits, - and _). Becomes the trigger word when that is empty."),
    Field("pivotal_vectors_per_token", "Vectors per token", "int", "network", "2 in the HF recipe.",
          advanced=True),
    Field("pivotal_init", "Initialise the token from", "text", "network",
          "random, or a class word (woman, dog, watercolor).", advanced=True),
    Field("pivotal_lr", "Pivotal learning rate", "float", "network",
          "0 = the text encoder's learning rate (must equal the others with Prodigy).", advanced=True),
    Field("pivotal_frac", "Train the token for this fraction of the steps", "float", "network",
          "Then it freezes and the LoRA trains on (HF recipe: 0.5).", advanced=True),
    Field("pivotal_embeddings_dir", "Embeddings folder", "text", "network",
          "Where <token>.safetensors is saved; empty = the webui's embeddings folder.", advanced=True),
    # 4) previews
    Field("sample_prompts", "Preview prompts", "textarea", "previews",
          "One per line; kohya options work: --n negative --w 512 --h 512 --s 20 --l 7 --d 1234."),
    Field("sample_every_n_steps", "Preview every N steps", "int", "previews", "0 = off."),
    Field("sample_every_n_epochs", "Preview every N epochs", "int", "previews", "0 = off."),
    Field("sample_seed", "Preview seed", "int", "previews"),
    Field("sample_steps", "Preview sampling steps", "int", "previews"),
    Field("sample_cfg_scale", "Preview CFG scale", "float", "previews"),
    Field("sample_weights", "LoRA weights to show", "text", "previews", "Comma-separated; 0 = the base model."),
    # 5) output
    Field("output_dir", "Output folder", "text", "output", "Empty = the webui's Lora folder."),
    Field("save_every_n_epochs", "Save every N epochs", "int", "output", "0 = only the final file."),
    Field("save_every_n_steps", "Save every N steps", "int", "output", "0 = off."),
    Field("save_precision", "Save precision", "choice", "output", choices=SAVE_PRECISIONS),
    Field("overwrite", "Overwrite an existing file", "bool", "output"),
    Field("save_state", "Save resumable state", "bool", "output", advanced=True),
    Field("resume_state", "Resume from state folder", "text", "output", advanced=True),
    Field("training_comment", "Comment in metadata", "text", "output", advanced=True),
]

FIELDS_BY_KEY: Dict[str, Field] = {f.key: f for f in FIELDS}
