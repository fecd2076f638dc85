"""kohya state dicts: export, validated import, and the error messages that say why a file does not fit."""

from __future__ import annotations

import torch

from ..lora_file.errors import LoRAFormatError
from .layouts import guess_arch, same_family

LORA_TENSOR_PARTS = ("lora_down.weight", "lora_up.weight", "alpha")
CONV_NAME_HINTS = ("resnets", "samplers", "in_layers", "out_layers", "emb_layers", "skip_connection", "_op", "_conv")


def kohya_state_dict(loras) -> dict:
    out = {}
    for name, lora in loras.items():
        out[f"{name}.lora_down.weight"] = lora.lora_down.weight.detach().to("cpu", torch.float32).clone()
        out[f"{name}.lora_up.weight"] = lora.lora_up.weight.detach().to("cpu", torch.float32).clone()
        out[f"{name}.alpha"] = torch.tensor(lora.alpha, dtype=torch.float32)
    return out


def group_by_module(tensors: dict) -> dict:
    """name → {part: tensor}; keys split at the first "." like A1111 and kohya do."""
    groups: dict = {}
    for key in sorted(tensors):
        name, _, part = key.partition(".")
        if part not in LORA_TENSOR_PARTS:
            raise LoRAFormatError(f"{key}: '{part or key}' is not a plain kohya LoRA tensor (only lora_down.weight, "
                                  "lora_up.weight and alpha are; LoHa/LoKr/DoRA files and bundled embeddings are not "
                                  "supported)")
        groups.setdefault(name, {})[part] = tensors[key]
    return groups


def module_specs_from_state_dict(tensors: dict) -> dict:
    """name → (rank, alpha) as kohya's create_network_from_weights reads them (no alpha means alpha = rank)."""
    specs = {}
    for name, group in group_by_module(tensors).items():
        if "lora_down.weight" not in group or "lora_up.weight" not in group:
            missing = "lora_down.weight" if "lora_down.weight" not in group else "lora_up.weight"
            raise LoRAFormatError(f"{name}.{missing}: missing (each LoRA module needs lora_down and lora_up)")
        rank = int(group["lora_down.weight"].shape[0])
        alpha = float(group["alpha"].item()) if "alpha" in group else float(rank)
        specs[name] = (rank, alpha)
    return specs


def load_into_modules(loras, tensors: dict, *, arch: str, strict: bool = True) -> dict:
    groups = group_by_module(tensors)
    missing = sorted(set(loras) - set(groups))
    unexpected = sorted(set(groups) - set(loras))
    if strict and (missing or unexpected):
        raise LoRAFormatError(_explain_name_mismatch(missing, unexpected, groups, loras, arch))
    copies, alphas = [], []
    for name in sorted(set(loras) & set(groups)):
        lora, group = loras[name], groups[name]
        for part, param, rank_dim in (("lora_down.weight", lora.lora_down.weight, 0),
                                      ("lora_up.weight", lora.lora_up.weight, 1)):
            if part not in group:
                raise LoRAFormatError(f"{name}.{part}: missing (each LoRA module needs lora_down and lora_up)")
            copies.append((param, _fitted(f"{name}.{part}", group[part], param, rank_dim, groups, arch)))
        alphas.append((lora, float(group["alpha"].item()) if "alpha" in group else float(lora.rank)))
    with torch.no_grad():  # everything was checked first: a failing file leaves the network untouched
        for param, value in copies:
            param.copy_(value.to(device=param.device, dtype=param.dtype))
    for lora, alpha in alphas:
        lora.alpha = alpha
    return {"missing": missing, "unexpected": unexpected}


def _without_unit_kernel(shape) -> tuple:
    return tuple(shape[:2]) + tuple(d for d in shape[2:] if d != 1)


def _fitted(key: str, value: torch.Tensor, param: torch.Tensor, rank_dim: int, groups: dict, arch: str):
    if value.shape == param.shape:
        return value
    if _without_unit_kernel(value.shape) == _without_unit_kernel(param.shape):
        return value.reshape(param.shape)  # [r, in] vs [r, in, 1, 1]: SD2 proj_in/out saved as 1×1 convs (§1.3)
    shape, want = tuple(value.shape), tuple(param.shape)
    others_equal = all(a == b for i, (a, b) in enumerate(zip(shape, want)) if i != rank_dim)
    if len(shape) == len(want) and others_equal:
        raise LoRAFormatError(f"{key}: the file has rank {shape[rank_dim]}, the network rank {want[rank_dim]}; "
                              "create the network with the file's rank (or use LoRANetwork.from_kohya_state_dict)")
    raise LoRAFormatError(f"{key}: shape {list(shape)} in the file, {list(want)} in the network: "
                          f"{_arch_hint(groups, arch) or 'the file is for a model with other layer widths'}")


def _arch_hint(groups: dict, arch: str) -> str:
    shapes = {f"{name}.{part}": tuple(t.shape) for name, group in groups.items() for part, t in group.items()}
    guess, basis = guess_arch(shapes)
    if guess is not None and not same_family(guess, arch):
        return f"the file looks like a {guess} LoRA ({basis}) but the loaded model is {arch}"
    return ""


def _explain_name_mismatch(missing: list, unexpected: list, groups: dict, loras, arch: str) -> str:
    if unexpected:
        parts = groups[unexpected[0]]
        part = next((p for p in LORA_TENSOR_PARTS if p in parts), sorted(parts)[0])
        head = f"{unexpected[0]}.{part}: no such LoRA module in the network for this {arch} model"
    else:
        head = f"{missing[0]}.lora_down.weight: missing from the file"
    counts = f" ({len(unexpected)} unexpected and {len(missing)} missing modules)"
    return head + counts + ": " + (_arch_hint(groups, arch) or _layout_hint(missing, unexpected, groups, loras))


def _layout_hint(missing: list, unexpected: list, file_names, network_names) -> str:
    def only(names: list, others: list, test) -> bool:
        return bool(names) and not others and all(test(name) for name in names)

    def is_conv(name: str) -> bool:
        return any(hint in name for hint in CONV_NAME_HINTS)

    for prefix, part, flag in (("lora_te", "text encoder", "train_text_encoder"), ("lora_unet_", "UNet", "train_unet")):
        in_file = any(name.startswith(prefix) for name in file_names)
        in_network = any(name.startswith(prefix) for name in network_names)
        if in_file and not in_network:
            return f"the file also trains the {part}; create the network with {flag}=True"
        if in_network and not in_file:
            return f"the file has no {part} modules; create the network with {flag}=False"
    if only(unexpected, missing, is_conv):
        return "the file has conv (LoRA-C3Lier) modules; create the network with conv_rank > 0"
    if only(missing, unexpected, is_conv):
        return "the file has no conv modules; create the network with conv_rank=0"
    return ("the module layout differs: the file is for another architecture (SD1 and SD2 differ in text-encoder "
            "depth), another block layout or naming style")
