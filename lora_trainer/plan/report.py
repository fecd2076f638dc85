"""The plan as data (items that add up to the total), and the one-line verdict the tab, API and CLI show."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

GB = 1e9  # the tab speaks in GB like the GPU vendors (and nvidia-smi's MiB are shown nowhere)


def fmt_gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


@dataclass
class PlanItem:
    key: str
    label: str
    bytes: int
    counted: bool = True  # False: shown only (the webui's resident weights)


@dataclass
class Suggestion:
    change: str  # e.g. "turn on gradient checkpointing"
    saves: int  # bytes


@dataclass
class MemoryPlan:
    arch: str
    device: str
    device_label: str
    resolution: tuple  # (height, width) in pixels
    batch: int
    items: List[PlanItem] = field(default_factory=list)
    free: Optional[int] = None  # bytes free on the device now (None: unknown)
    suggestions: List[Suggestion] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def needed(self) -> int:
        return sum(item.bytes for item in self.items if item.counted)

    @property
    def fits(self) -> Optional[bool]:
        return None if self.free is None else self.needed <= self.free

    def item(self, key: str) -> PlanItem:
        return next(i for i in self.items if i.key == key)

    def summary(self) -> str:
        if self.free is None:
            return f"Plan: ~{fmt_gb(self.needed)} needed ({self.device_label}; free memory unknown)"
        if self.fits:
            return f"Plan: ~{fmt_gb(self.needed)} of {fmt_gb(self.free)} free — fits"
        text = f"Plan: won't fit: ~{fmt_gb(self.needed)} needed, {fmt_gb(self.free)} free"
        if self.suggestions:
            text += " — " + " / ".join(f"{s.change} (−{fmt_gb(s.saves)})" for s in self.suggestions)
        return text

    def table(self) -> str:
        lines = [f"Memory plan: {self.arch} {self.resolution[1]}×{self.resolution[0]} batch {self.batch} on "
                 f"{self.device} — {self.device_label}"]
        for item in self.items:
            mark = "" if item.counted else "   (resident already, not counted)"
            lines.append(f"  {item.label:<58} {item.bytes / 2**20:>10.1f} MiB{mark}")
        lines.append(f"  {'total needed':<58} {self.needed / 2**20:>10.1f} MiB")
        if self.free is not None:
            lines.append(f"  {'free now':<58} {self.free / 2**20:>10.1f} MiB")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(needed=self.needed, fits=self.fits, summary=self.summary())
        return data
