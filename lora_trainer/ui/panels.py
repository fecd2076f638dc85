"""What the tab shows, computed from the job status and the host (pure functions; tab.py only wires them)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

STATE_LABELS = {
    "idle": "Idle", "queued": "Queued", "running": "Training", "completed": "Finished",
    "cancelled": "Cancelled", "nan": "Stopped: the loss became NaN", "oom": "Stopped: out of GPU memory",
    "error": "Failed",
}
MAX_PLOT_POINTS = 2000


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def model_markdown(host) -> str:
    """'Model: name (SD1)' — or why training cannot start with what is loaded."""
    from lora_trainer.ui.preflight import JobRefused, check_model

    try:
        title, arch = check_model(host)
    except JobRefused as exc:
        return f"**Model:** {html.escape(exc.message)}"
    from lora_trainer.ui.clip_skip import clip_skip_markdown

    text = f"**Model:** {html.escape(title or 'loaded checkpoint')} — detected **{arch.upper()}**. " \
           f"Training uses this checkpoint; load another one at the top to train on it."
    note = _arch_note(host, arch)
    if note:
        text = f"{text} {html.escape(note)}."
    return f"{text} {clip_skip_markdown(host, arch)}"


def _arch_note(host, arch: str) -> str:
    """What kohya's per-architecture defaults will do with this model (SDXL: UNet only; v-prediction)."""
    from lora_trainer.kohya_semantics import arch_note

    try:
        from lora_trainer.arch.adapters import get_adapter

        prediction = get_adapter(host.model(), arch).prediction_type
    except Exception:  # the model line must render whatever is loaded
        prediction = "epsilon"
    return arch_note(arch, prediction)


def state_key(status: Dict[str, Any]) -> str:
    """Which job in which state: a click's answer stays shown until this changes."""
    return f"{status.get('job_id') or ''}:{status.get('state', 'idle')}"


def status_markdown(status: Dict[str, Any]) -> str:
    state = status.get("state", "idle")
    label = STATE_LABELS.get(state, state)
    if state == "idle":
        return f"**{label}.** {html.escape(status.get('message', ''))}"
    lines = [f"**{label}** — {html.escape(str(status.get('output_name', '')))}"]
    if status.get("message"):
        lines[0] += f": {html.escape(str(status['message']))}"
    if status.get("total_steps"):
        parts = [f"step {status.get('step', 0)}/{status['total_steps']}"]
        if status.get("total_epochs"):
            parts.append(f"epoch {status.get('epoch', 0)}/{status['total_epochs']}")
        if status.get("avg_loss") is not None:
            parts.append(f"loss {status['avg_loss']:.4f}")
        if status.get("lr") is not None:
            parts.append(f"lr {status['lr']:.2e}")
        if status.get("it_per_s"):
            parts.append(f"{status['it_per_s']:.2f} it/s")
        if state == "running":
            parts.append(f"ETA {format_eta(status.get('eta_s'))}")
        lines.append(" · ".join(parts))
    if status.get("final_file"):
        lines.append(f"Saved: `{status['final_file']}`")
    elif status.get("files"):
        lines.append(f"Saved so far: {len(status['files'])} file(s), newest `{status['files'][-1]}`")
    return "\n\n".join(lines)


def loss_frame(status: Dict[str, Any]):
    """A long-format DataFrame (step, loss, curve) for gr.LinePlot: raw loss and its running average."""
    import pandas as pd

    history: List[list] = status.get("loss_history") or []
    stride = max(1, len(history) // MAX_PLOT_POINTS)
    rows = []
    for step, loss, avg in history[::stride]:
        rows.append({"step": step, "loss": loss, "curve": "loss"})
        rows.append({"step": step, "loss": avg, "curve": "average"})
    return pd.DataFrame(rows, columns=["step", "loss", "curve"])


def send_to_txt2img_text(status: Dict[str, Any], weight: float = 0.8) -> str:
    """`<lora:NAME:0.8>, trigger` for the finished (or last saved) LoRA; '' while there is nothing to use."""
    path = status.get("final_file") or (status.get("files") or [""])[-1]
    if not path:
        return ""
    text = f"<lora:{Path(path).stem}:{weight:g}>"
    trigger = (status.get("trigger_word") or "").strip()
    return f"{text}, {trigger}" if trigger else text


def log_text(status: Dict[str, Any]) -> str:
    return "\n".join(status.get("log") or [])


def folder_choices(path: str, limit: int = 200) -> List[str]:
    """Sub-folders to pick from: of `path` if it is a folder, else of its nearest existing parent."""
    start = Path(os.path.expanduser(path or ".")).resolve()
    while not start.is_dir() and start != start.parent:
        start = start.parent
    choices = [str(start)]
    if start.parent != start:
        choices.append(str(start.parent))
    try:
        subs = sorted(p for p in start.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        subs = []
    choices += [str(p) for p in subs[:limit]]
    return choices
