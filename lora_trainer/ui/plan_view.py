"""The memory plan in the tab (the line next to Start, recomputed when a setting changes) and the API."""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict

from lora_trainer.ui import form

logger = logging.getLogger(__name__)
PLAN_FIELDS = ("train_batch_size", "resolution", "network_dim", "conv_dim", "optimizer", "optimizer_args",
               "gradient_checkpointing", "train_text_encoder", "train_unet", "cache_latents", "random_crop",
               "mixed_precision", "cache_text_encoder_outputs")
_lock = threading.Lock()  # one plan at a time (a trace of SDXL takes seconds; the next change re-plans)


def plan_for_host(config, host):
    """The MemoryPlan for `config` on the webui's loaded model, or raise ValueError saying why there is none."""
    from lora_trainer.plan.estimate import plan_for_model

    model = host.model()
    if model is None:
        raise ValueError("no model is loaded")
    with _lock:
        return plan_for_model(model, config)


def plan_dict(config, host) -> Dict[str, Any]:
    try:
        return plan_for_host(config, host).to_dict()
    except Exception as exc:  # noqa: BLE001 - the estimate is advice: say why there is none
        logger.exception("memory plan failed")
        return {"summary": f"Plan: not available ({type(exc).__name__}: {exc})", "fits": None}


def plan_markdown(runner, values: Dict[str, Any]) -> str:
    """The line under Start; never raises."""
    job = getattr(runner, "job", None)
    if job is not None and getattr(job, "active", False):
        return "Plan: training is running (the plan is for the next run)"
    values = dict(values)
    values["train_dir"] = values.get("train_dir") or "(not needed to plan)"
    try:
        config = form.values_to_config(values, runner.host.default_output_dir() or ".")
    except Exception as exc:  # noqa: BLE001
        return f"Plan: fix the settings first ({exc})"
    data = plan_dict(config, runner.host)
    mark = {True: "✅", False: "⚠️"}.get(data.get("fits"), "")
    return f"{mark} {data['summary']}".strip()
