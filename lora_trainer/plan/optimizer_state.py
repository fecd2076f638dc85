"""Bytes of optimizer state for the LoRA parameters, per optimizer, from each parameter's shape — what each
optimizer's own code allocates on its first step (LoRA parameters are fp32)."""

from __future__ import annotations

from math import prod

F32 = 4


def _adamw8bit(n: int, states: int = 2) -> int:
    # bitsandbytes Optimizer2State/1State: uint8 state(s) plus one fp32 absmax per 256-value block and state;
    # tensors under min_8bit_size (4096) keep fp32 state
    if n < 4096:
        return states * F32 * n
    blocks = -(-n // 256)
    return states * (n + F32 * blocks)


def _adafactor(shape: tuple, args: dict) -> int:
    # transformers Adafactor: factored second moment (row + column) for ≥2-D tensors, full for 1-D; exp_avg only
    # with beta1; RMS/step are scalars
    n = prod(shape)
    if len(shape) >= 2:
        second = prod(shape[:-1]) + prod(shape[:-2] + shape[-1:])
    else:
        second = n
    first = n if args.get("beta1") is not None else 0
    return F32 * (second + first)


def _prodigy(shape: tuple, is_up: bool, args: dict) -> int:
    # prodigyopt: s and p0 (a copy of the start value, a 0-dim tensor when the tensor starts at zero: lora_up),
    # exp_avg (beta1 > 0) and exp_avg_sq; slice_p > 1 thins s and p0
    n = prod(shape)
    sliced = -(-n // int(args.get("slice_p", 1)))
    betas = args.get("betas", (0.9, 0.999))
    first = n if betas[0] > 0 else 0
    return F32 * (sliced + (1 if is_up else sliced) + first + n)


def optimizer_state_bytes(name: str, shapes: list, args: dict | None = None) -> int:
    """`shapes`: [(shape, is_lora_up)] of the trained parameters."""
    args = dict(args or {})
    key = name.lower()
    total = 0
    for shape, is_up in shapes:
        shape = tuple(int(d) for d in shape)
        n = prod(shape)
        if key == "adamw":
            total += 2 * F32 * n
        elif key == "adamw8bit":
            total += _adamw8bit(n, 2)
        elif key == "lion":
            total += F32 * n
        elif key == "lion8bit":
            total += _adamw8bit(n, 1)
        elif key == "prodigy":
            total += _prodigy(shape, is_up, args)
        elif key == "adafactor":
            total += _adafactor(shape, args)
        elif key == "sgd":
            total += F32 * n if float(args.get("momentum", 0) or 0) > 0 else 0
        else:
            raise ValueError(f"unknown optimizer {name!r}")
    return total


def step_workspace_bytes(name: str, shapes: list, device_type: str) -> int:
    """Temporaries of one optimizer step: multi-tensor (foreach) kernels on CUDA hold about two parameter-sized
    intermediates at once; the per-tensor CPU path about two copies of the largest tensor."""
    sizes = [F32 * prod(s) for s, _ in shapes] or [0]
    if device_type == "cuda" and name.lower() in ("adamw", "sgd"):
        return 2 * sum(sizes)
    return 2 * max(sizes)
