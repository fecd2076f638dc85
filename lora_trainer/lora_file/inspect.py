"""What a LoRA file holds and whether the webui's Lora extension can apply all of it (`python -m lora_trainer inspect`).

The verdict checks what A1111 needs (webui-integration.md §4.2/4.3): only `lora_unet_`/`lora_te_`/`lora_te1_`/
`lora_te2_` keys, only lora_down/lora_up/alpha tensors, every name a module of the architecture under kohya's
naming, alpha present, matching ranks, and all four of q/k/v/out for OpenCLIP's fused attention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..lora_net.layouts import compvis_style_unet_names, expected_lora_names, guess_arch, same_family
from .hashes import addnet_hash_file
from .load import load_lora
from .metadata import BASE_MODEL_VERSION

KNOWN_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
LORA_PARTS = ("lora_down.weight", "lora_up.weight", "alpha")
FUSED_ATTENTION_PREFIX = {"sd2": "lora_te", "sd2v": "lora_te", "sdxl": "lora_te2"}  # OpenCLIP text encoders
SHOWN_METADATA = ("ss_output_name", "ss_base_model_version", "ss_v2", "ss_network_module", "ss_network_dim",
                  "ss_network_alpha", "ss_network_args", "ss_network_dropout", "ss_sd_model_name", "ss_resolution",
                  "ss_clip_skip", "ss_num_train_images", "ss_steps", "ss_epoch", "ss_learning_rate", "ss_unet_lr",
                  "ss_text_encoder_lr", "ss_optimizer", "ss_training_started_at", "modelspec.architecture",
                  "modelspec.title", "sshs_model_hash")


@dataclass
class PartSummary:
    name: str  # "unet", "unet conv3x3", "lora_te", "lora_te1", "lora_te2"
    modules: int = 0
    ranks: set = field(default_factory=set)
    alphas: set = field(default_factory=set)


@dataclass
class LoRAReport:
    path: Path
    size_bytes: int
    arch: str | None
    arch_basis: str
    parts: dict
    dtypes: list
    tensor_count: int
    metadata: dict  # the entries worth showing
    top_tags: list
    problems: list  # anything here makes the verdict "not compatible"
    notes: list

    @property
    def compatible(self) -> bool:
        return not self.problems


def _summarise(problems: list, what: str, names: list) -> None:
    if names:
        problems.append(f"{len(names)} {what} (first: {names[0]})")


def inspect_lora(path) -> LoRAReport:
    path = Path(path)
    tensors, metadata = load_lora(path)
    problems, notes = [], []
    groups: dict = {}
    for key in sorted(tensors):
        name, _, part = key.partition(".")
        groups.setdefault(name, {})[part] = tensors[key]
    bundled = sorted({part.split(".")[0] for part in groups.pop("bundle_emb", {})})
    if bundled:  # pivotal tuning / textual inversion in the webui's bundle layout
        notes.append(f"bundled embeddings (the webui loads them with the LoRA): {', '.join(bundled)}")
    _summarise(problems, "keys with an unknown prefix", [n for n in groups if not n.startswith(KNOWN_PREFIXES)])
    groups = {n: g for n, g in groups.items() if n.startswith(KNOWN_PREFIXES)}
    _summarise(problems, "tensors other than lora_down/lora_up/alpha",
               [f"{n}.{p}" for n, g in groups.items() for p in g if p not in LORA_PARTS])
    _summarise(problems, "modules without both lora_down and lora_up",
               [n for n, g in groups.items() if not {"lora_down.weight", "lora_up.weight"} <= set(g)])
    _summarise(problems, "modules without alpha", [n for n, g in groups.items() if "alpha" not in g])
    _summarise(problems, "modules whose lora_up rank differs from lora_down's",
               [n for n, g in groups.items() if "lora_down.weight" in g and "lora_up.weight" in g
                and g["lora_down.weight"].shape[0] != g["lora_up.weight"].shape[1]])

    arch, basis = guess_arch({k: tuple(t.shape) for k, t in tensors.items()}, metadata)
    if arch is None:
        problems.append("cannot tell the architecture (no recognisable names, widths or metadata)")
    else:
        _check_names(arch, groups, problems, notes)
        _check_metadata(arch, basis, metadata, problems)
    if "sshs_model_hash" in metadata and metadata["sshs_model_hash"] != addnet_hash_file(path):
        problems.append("sshs_model_hash does not match the file's tensor data (edited or damaged?)")
    return LoRAReport(path, path.stat().st_size, arch, basis, _parts(groups), sorted({str(t.dtype).replace("torch.", "")
                      for t in tensors.values()}), len(tensors), {k: metadata[k] for k in SHOWN_METADATA
                      if k in metadata}, _top_tags(metadata.get("ss_tag_frequency")), problems, notes)


def _check_names(arch: str, groups: dict, problems: list, notes: list) -> None:
    candidates = ["sd1", "sd2", "sd2v"] if arch == "sd1/sd2" else [arch]
    expected: dict = {}
    for candidate in candidates:
        expected.update(expected_lora_names(candidate))
    compvis = set() if arch == "sdxl" else compvis_style_unet_names("sd1")
    known = list(groups)
    _summarise(problems, f"module names that are not layers of {arch} under kohya/A1111 naming",
               [n for n in known if n not in expected and n not in compvis])
    if any(n in compvis for n in known):
        notes.append("UNet names are compvis-style (lora_unet_input_blocks_…): A1111 and ComfyUI read them, "
                     "diffusers and kohya do not")
    fused = FUSED_ATTENTION_PREFIX.get(arch)
    if fused:
        layers = {}
        for name in known:
            if name.startswith(fused + "_") and "_self_attn_" in name:
                layers.setdefault(name.rsplit("_self_attn_", 1)[0], set()).add(name.rsplit("_self_attn_", 1)[1])
        _summarise(problems, "fused-attention layers without all of q/k/v/out_proj (A1111 skips them)",
                   sorted(layer for layer, roles in layers.items() if len(roles) != 4))


def _check_metadata(arch: str, basis: str, metadata: dict, problems: list) -> None:
    version = metadata.get("ss_base_model_version")
    if version and not basis.startswith("metadata"):
        claimed = {v: k for k, v in BASE_MODEL_VERSION.items()}.get(version, "sdxl" if version.startswith("sdxl")
                                                                       else None)
        if claimed and not same_family(arch, claimed):
            problems.append(f"metadata says {version} but the tensors are {arch} ({basis})")
    if not metadata:
        problems.append("no metadata: A1111 cannot tell the SD version and may hide the card")
    elif arch in ("sd2", "sd2v") and metadata.get("ss_v2") != "True":
        problems.append("SD2 LoRA without ss_v2=True: A1111 treats it as SD1 and hides it for SD2 models")
    elif arch == "sdxl" and not (version or "").startswith("sdxl_"):
        problems.append("SDXL LoRA without ss_base_model_version=sdxl_…: A1111 hides it for SDXL models")


def _parts(groups: dict) -> dict:
    parts: dict = {}
    for name, group in groups.items():
        down = group.get("lora_down.weight")
        if down is None:
            continue
        part = "unet" if name.startswith("lora_unet_") else name.split("_text_model")[0].rstrip("_")
        if part == "unet" and down.dim() == 4 and tuple(down.shape[2:]) != (1, 1):
            part = "unet conv3x3"
        summary = parts.setdefault(part, PartSummary(part))
        summary.modules += 1
        summary.ranks.add(int(down.shape[0]))
        summary.alphas.add(float(group["alpha"].item()) if "alpha" in group else None)
    return parts


def _top_tags(raw: str | None, count: int = 10) -> list:
    try:
        frequency = json.loads(raw) if raw else {}
        totals: dict = {}
        for tags in frequency.values():
            for tag, n in tags.items():
                totals[tag] = totals.get(tag, 0) + int(n)
    except (ValueError, AttributeError, TypeError):
        return []
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def format_report(report: LoRAReport) -> str:
    def values(items) -> str:
        return ", ".join("none" if v is None else f"{v:g}" for v in sorted(items, key=lambda v: (v is None, v or 0)))

    lines = [f"File:          {report.path}",
             f"Size:          {report.size_bytes / 1024:.1f} KiB, {report.tensor_count} tensors, "
             f"dtype {'/'.join(report.dtypes)}",
             f"Architecture:  {report.arch or 'unknown'} ({report.arch_basis})"]
    for part in sorted(report.parts.values(), key=lambda p: p.name):
        lines.append(f"  {part.name:<13} {part.modules:>4} modules, rank {values(part.ranks)}, "
                     f"alpha {values(part.alphas)}")
    unet_parts = [p.modules for name, p in report.parts.items() if name.startswith("unet")]
    if len(unet_parts) > 1:
        lines.append(f"  {'unet total':<13} {sum(unet_parts):>4} modules")
    if report.metadata:
        lines.append("Metadata:")
        for key, value in report.metadata.items():
            if key == "ss_training_started_at":
                try:
                    value = f"{value} ({datetime.fromtimestamp(float(value)).isoformat(timespec='seconds')})"
                except ValueError:
                    pass
            lines.append(f"  {key:<24} {value}")
    if report.top_tags:
        lines.append("Top tags:      " + ", ".join(f"{tag} ({n})" for tag, n in report.top_tags))
    lines.extend(f"Note:          {note}" for note in report.notes)
    if report.compatible:
        lines.append("Verdict:       compatible with the webui's Lora extension for " + (report.arch or "?"))
    else:
        lines.append("Verdict:       NOT compatible:")
        lines.extend(f"  - {problem}" for problem in report.problems)
    return "\n".join(lines)
