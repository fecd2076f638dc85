"""LoRANetwork: kohya-style LoRA modules attached in place to the model the webui has loaded.

Nothing of the LoRA is registered on the model: the modules live in this network (an nn.Module of its own, so
`.to()`, `.train()` and `.parameters()` only ever touch LoRA weights) and reach the model through per-instance
forward overrides (base.ForwardOverride) that `attach()` installs and `detach()` removes exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from ..arch import model_parts
from ..lora_file.errors import LoRAFormatError
from .conv import ConvLoRA
from .linear import LinearLoRA
from .mha import MultiheadAttentionLoRA
from .state import kohya_state_dict, load_into_modules, module_specs_from_state_dict
from .targets import Target, text_encoder_targets, unet_targets

# (target, kohya name) → (rank, alpha), or None to leave that layer out
RankRule = Callable[[Target, str], "tuple | None"]


class LoRANetwork(nn.Module):
    def __init__(self, arch: str, unet_modules: dict, text_encoder_modules: dict, overrides: list,
                 train_unet: bool, train_text_encoder: bool, multiplier: float = 1.0, config: dict | None = None):
        super().__init__()
        self.arch = arch
        self.loras = nn.ModuleDict({**unet_modules, **text_encoder_modules})
        self.unet_modules = dict(unet_modules)
        self.text_encoder_modules = dict(text_encoder_modules)
        self.train_unet, self.train_text_encoder = train_unet, train_text_encoder
        self.config = dict(config or {})  # rank, alpha, conv_rank, conv_alpha, dropout as created
        self._overrides = overrides
        self._attached = False
        self.multiplier = multiplier

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, model, arch: str | None = None, rank: int = 16, alpha: float = 8.0, conv_rank: int = 0,
               conv_alpha: float = 1.0, dropout: float = 0.0, train_unet: bool = True, train_text_encoder: bool = True,
               multiplier: float = 1.0) -> LoRANetwork:
        """Build fp32 LoRA modules on each target's device; the model is not touched until attach()."""

        def rule(target: Target, name: str):
            if target.is_spatial_conv:
                return (conv_rank, conv_alpha) if conv_rank > 0 else None
            return rank, alpha

        config = dict(rank=rank, alpha=alpha, conv_rank=conv_rank, conv_alpha=conv_alpha, dropout=dropout)
        return cls._build(model, arch, rule, include_conv=conv_rank > 0, dropout=dropout, train_unet=train_unet,
                          train_text_encoder=train_text_encoder, multiplier=multiplier, config=config)

    @classmethod
    def from_kohya_state_dict(cls, model, tensors: dict, arch: str | None = None, dropout: float = 0.0,
                              multiplier: float = 1.0) -> LoRANetwork:
        """A network shaped like a kohya file (per-module rank and alpha, conv modules if present), like kohya's
        `create_network_from_weights`. Raises LoRAFormatError naming the first key that fits no layer."""
        specs = module_specs_from_state_dict(tensors)
        has = {part: any(name.startswith(part) for name in specs) for part in ("lora_unet_", "lora_te")}

        def rule(target: Target, name: str):
            return specs.get(name)

        net = cls._build(model, arch, rule, include_conv=True, dropout=dropout, train_unet=has["lora_unet_"],
                         train_text_encoder=has["lora_te"], multiplier=multiplier, config={})
        net.load_kohya_state_dict(tensors, strict=True)  # also rejects names that matched no layer
        net.config = _dominant_config(net, dropout)
        return net

    @classmethod
    def _build(cls, model, arch, rule: RankRule, *, include_conv, dropout, train_unet, train_text_encoder,
               multiplier, config) -> LoRANetwork:
        parts = model_parts(model, arch)
        unet, text, overrides = {}, {}, []
        if train_unet:
            for target in unet_targets(parts.unet, parts.arch, include_conv=include_conv):
                _add_target(target, rule, dropout, unet, overrides)
        if train_text_encoder:
            for part in parts.text_encoders:
                for target in text_encoder_targets(part):
                    _add_target(target, rule, dropout, text, overrides)
        return cls(parts.arch, unet, text, overrides, train_unet, train_text_encoder, multiplier, config)

    # ---- attaching ----------------------------------------------------------------------------------------------
    @property
    def is_attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        """Install the forward overrides (idempotent). On failure, whatever was installed is removed again."""
        if self._attached:
            return
        try:
            for override in self._overrides:
                override.install()
        except BaseException:
            self.detach()
            raise
        self._attached = True

    def detach(self) -> None:
        """Remove every override, newest first; the model is then exactly as before attach(). Safe to repeat."""
        for override in reversed(self._overrides):
            override.remove()
        self._attached = False

    @contextmanager
    def attached(self):
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    # ---- training -----------------------------------------------------------------------------------------------
    @property
    def multiplier(self) -> float:
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = float(value)
        for lora in self.loras.values():
            lora.multiplier = self._multiplier

    def trainable_parameters(self) -> list:
        return list(self.parameters())

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list:
        """kohya's grouping: text encoder first, then UNet; a group whose lr is 0/None (or whose part is not
        trained) is dropped, which is how `--text_encoder_lr 0` freezes the TE LoRA."""
        groups = []
        for name, modules, lr, trained in (("textencoder", self.text_encoder_modules, text_encoder_lr,
                                            self.train_text_encoder),
                                           ("unet", self.unet_modules, unet_lr, self.train_unet)):
            params = [p for lora in modules.values() for p in lora.parameters()]
            if params and trained and lr:
                groups.append({"params": params, "lr": float(lr), "name": name})
        return groups

    def to(self, device=None, dtype: torch.dtype | None = None) -> LoRANetwork:
        """Move the LoRA weights (only); they stay fp32 whatever the base dtype (autocast handles mixed precision)."""
        if dtype is not None and dtype != torch.float32:
            raise ValueError(f"LoRA weights are kept in float32, not {dtype}")
        return super().to(device=device)

    # ---- kohya state dict ---------------------------------------------------------------------------------------
    def kohya_state_dict(self) -> dict:
        """`<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha` (0-dim): fp32 CPU clones."""
        return kohya_state_dict(self.loras)

    def load_kohya_state_dict(self, state_dict: dict, strict: bool = True) -> dict:
        """Copy a kohya state dict into the modules (all checked before anything is copied). Returns
        {"missing": [...], "unexpected": [...]} module names (only non-empty when strict=False)."""
        return load_into_modules(self.loras, state_dict, arch=self.arch, strict=strict)


def _add_target(target: Target, rule: RankRule, dropout: float, modules: dict, overrides: list) -> None:
    if target.kind == "mha":
        specs = [rule(target, name) for name in target.names]
        if not any(specs):
            return
        if not all(specs):  # A1111 applies a fused-attention LoRA only when q, k, v and out are all present
            missing = [name for name, spec in zip(target.names, specs) if not spec]
            raise LoRAFormatError(f"{missing[0]}: missing, but its fused attention has LoRAs for the other "
                                  "projections; A1111 needs all of q, k, v and out")
        group = MultiheadAttentionLoRA.create(target.module, target.names, [s[0] for s in specs],
                                              [s[1] for s in specs], dropout)
        modules.update((lora.lora_name, lora) for lora in group.loras)
        overrides.append(group.make_override())
        return
    (name,) = target.names
    spec = rule(target, name)
    if not spec or not spec[0]:
        return
    lora_cls = LinearLoRA if target.kind == "linear" else ConvLoRA
    lora = lora_cls.for_target(name, target.module, spec[0], spec[1], dropout)
    modules[name] = lora
    overrides.append(lora.make_override(target.module))


def _dominant_config(net: LoRANetwork, dropout: float) -> dict:
    """rank/alpha (and conv_rank/conv_alpha) most modules of a loaded file use: what its metadata should say."""

    def most_common(values: list):
        return max(set(values), key=values.count) if values else None

    def is_spatial(lora) -> bool:
        return len(lora.weight_shape) == 4 and lora.weight_shape[2:] != (1, 1)

    spatial = [m for m in net.loras.values() if is_spatial(m)]
    others = [m for m in net.loras.values() if not is_spatial(m)]
    return dict(rank=most_common([m.rank for m in others]), alpha=most_common([m.alpha for m in others]),
                conv_rank=most_common([m.rank for m in spatial]) or 0,
                conv_alpha=most_common([m.alpha for m in spatial]) or 1.0, dropout=dropout)
