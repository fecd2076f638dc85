"""What a training run does to Forge's engine around the engine-side training: part of the Forge host adapter.

Forge's own API only (its `backend.memory_management` module is passed in, so this file imports nothing of Forge):
- before: refuse setups that cannot carry a gradient (low-VRAM/streaming modes, fp8/NF4/GGUF UNet storage), take
  out the LoRAs Forge merged into the weights for an earlier generation (its patcher's `LoraLoader.refresh` with no
  patches puts its backups back), and load the UNet, text encoders and VAE fully onto the device with
  `load_models_gpu` — refusing if Forge decides to stream the UNet from CPU memory;
- after: give back exactly what we loaded (models that were loaded before stay loaded), and leave the engine's
  LoRA bookkeeping as a fresh load has it (none merged, `current_lora_hash` empty), so the next generation applies
  whatever its prompt asks for — including the file just trained.
"""

from __future__ import annotations

from typing import List, Optional

import torch

TRAINABLE_STORAGE = (torch.float32, torch.float16, torch.bfloat16)
LOW_BITS_SETTING = "'Diffusion in Low Bits' (top bar) to 'Automatic' and reload the checkpoint"
STREAMING_SETTING = ("raise 'GPU Weights (MB)' in the top bar so the whole UNet fits, or restart Forge without "
                     "--always-low-vram / --always-no-vram / --always-offload-from-vram")


class ForgeRefused(RuntimeError):
    """This Forge setup cannot train; the message names the setting to change."""


def unsupported_reason(model, memory_management, args=None) -> str:
    """Static checks, before a job is queued. "" when training can start."""
    if model is None or getattr(model, "forge_objects", None) is None:
        return ""
    state = getattr(memory_management.vram_state, "name", str(memory_management.vram_state))
    if state in ("LOW_VRAM", "NO_VRAM"):
        return f"Forge runs in {state} mode (UNet layers streamed from CPU memory); {STREAMING_SETTING}"
    if args is not None and getattr(args, "always_offload_from_vram", False):
        return f"Forge runs with --always-offload-from-vram; {STREAMING_SETTING}"
    unet = model.forge_objects.unet.model
    storage = getattr(unet, "storage_dtype", None)
    if storage is not None and storage not in TRAINABLE_STORAGE:
        return f"the UNet is stored as {storage} (quantized weights carry no gradient); set {LOW_BITS_SETTING}"
    for name, p in unet.diffusion_model.named_parameters():
        if p.dtype not in TRAINABLE_STORAGE or hasattr(p, "bnb_quantized") or getattr(p, "gguf_cls", None):
            return (f"the UNet weight {name} is stored quantized ({p.dtype}); set {LOW_BITS_SETTING}")
    return ""


def _patchers(model) -> list:
    objects = model.forge_objects_original or model.forge_objects
    return [objects.unet, objects.clip.patcher]


def _untangle_inference_tensors(module: torch.nn.Module) -> int:
    """Tensors Forge (re)created under torch.inference_mode — a LoRA merge, the text engine's `position_ids.to()`
    and embedding dtype moves at every generation — cannot be saved for backward nor versioned; give each such
    parameter / buffer an equal normal tensor (values, dtype, device unchanged). Returns how many were replaced."""
    count = 0
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_inference():
                sub._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
                count += 1
        for name, b in list(sub._buffers.items()):
            if b is not None and b.is_inference():
                sub._buffers[name] = b.clone()
                count += 1
    return count


class ForgeSession:
    """begin() before the engine-side training, end() after it (also after failures)."""

    def __init__(self, model, memory_management):
        self.model = model
        self.mm = memory_management
        self._loaded_before: List[object] = []
        self._ours: List[object] = []
        self.log: List[str] = []

    # ---- before -----------------------------------------------------------------------------------------------
    def begin(self) -> ForgeSession:
        reason = unsupported_reason(self.model, self.mm)
        if reason:
            raise ForgeRefused(reason)
        self.unpatch_loras()
        self._loaded_before = [entry.model for entry in self.mm.current_loaded_models]
        objects = self.model.forge_objects
        wanted = [objects.unet, objects.clip.patcher, objects.vae.patcher]
        self.mm.load_models_gpu(wanted)
        # Forge unloads a clone of what it loads (the LoRA'd UNet of the last generation): the module itself was
        # on the device before, so it stays there after
        self._ours = [p for p in wanted if not any(p.model is q.model for q in self._loaded_before)]
        for entry in self.mm.current_loaded_models:
            if entry.model is objects.unet and getattr(entry, "model_accelerated", False):
                raise ForgeRefused(f"Forge could only load part of the UNet onto the GPU and streams the rest; "
                                   f"{STREAMING_SETTING}")
        replaced = sum(_untangle_inference_tensors(p.model) for p in wanted)
        if replaced:
            self.log.append(f"{replaced} weights Forge made under inference mode were copied to train through")
        return self

    def unpatch_loras(self) -> None:
        """Take out every LoRA Forge merged (or attached online) for an earlier generation, through its patcher."""
        model = self.model
        if model.forge_objects_original is not None:
            model.forge_objects = model.forge_objects_original.shallow_copy()
        for patcher in _patchers(model):
            loader = patcher.lora_loader
            if loader.backup or loader.online_backup or loader.loaded_hash != str([]):
                loader.refresh(lora_patches={}, offload_device=patcher.offload_device, force_refresh=True)
                self.log.append(f"took the LoRAs of the last generation out of {type(patcher.model).__name__}")

    # ---- after ------------------------------------------------------------------------------------------------
    def end(self) -> None:
        """Give back the memory we took and leave no LoRA merged. Safe after a failed or partial begin()."""
        model = self.model
        try:
            self.unpatch_loras()  # nothing should be merged; if a preview made Forge merge one, undo it
        finally:
            model.current_lora_hash = str([])
            if model.forge_objects_original is not None:
                model.forge_objects = model.forge_objects_original.shallow_copy()
                model.forge_objects_after_applying_lora = model.forge_objects_original.shallow_copy()
            self._unload_ours()

    def _unload_ours(self) -> None:
        loaded = self.mm.current_loaded_models
        for i in reversed(range(len(loaded))):
            if any(loaded[i].model is p for p in self._ours):
                loaded.pop(i).model_unload()
        self._ours = []
        self.mm.soft_empty_cache()


def loaded_parameters(model_data) -> Optional[dict]:
    """The loading parameters of the model Forge holds now (None if the dropdown already asks for another)."""
    params = getattr(model_data, "forge_loading_parameters", None)
    return dict(params) if params is not None and str(params) == getattr(model_data, "forge_hash", None) else None
