"""Recipes: named sets of option values (data: recipes.json next to this file) with the reason for each.

A recipe fills the form; options it does not name keep their values. The tab, the HTTP API (`"recipe": NAME`) and
the CLI (`train --recipe NAME`) all go through `apply_recipe`, and explicit options always win over the recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

RECIPES_FILE = Path(__file__).with_name("recipes.json")
ARCH_NAMES = {"sd1": "SD1.5", "sd2": "SD2", "sd2v": "SD2-v", "sdxl": "SDXL"}


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str  # "" = any model
    summary: str
    settings: Dict[str, Any]
    why: Dict[str, str]

    def describe(self, loaded_arch: str = "") -> str:
        """Markdown: what it sets and why (shown under the Recipe dropdown)."""
        lines = [f"**{self.name}**: {self.summary}"]
        if self.arch and loaded_arch and loaded_arch != self.arch and not (self.arch == "sd1" and
                                                                          loaded_arch.startswith("sd2")):
            lines.append(f"⚠ Made for {ARCH_NAMES.get(self.arch, self.arch)}; the loaded model is "
                         f"{ARCH_NAMES.get(loaded_arch, loaded_arch)}.")
        for key, value in self.settings.items():
            reason = self.why.get(key)
            lines.append(f"- `{key}` = {json.dumps(value)}" + (f": {reason}" if reason else ""))
        return "\n".join(lines)


def load_recipes(path: Path = RECIPES_FILE) -> List[Recipe]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Recipe(r["name"], r.get("arch", ""), r.get("summary", ""), dict(r["settings"]), dict(r.get("why", {})))
            for r in data["recipes"]]


def recipe_names() -> List[str]:
    return [r.name for r in load_recipes()]


def get_recipe(name: str) -> Recipe:
    from .config import ConfigError

    wanted = (name or "").strip().lower()
    for recipe in load_recipes():
        if recipe.name.lower() == wanted:
            return recipe
    raise ConfigError("recipe", f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())}")


def apply_recipe(data: Dict[str, Any], name: Optional[str]) -> Dict[str, Any]:
    """`data` (TrainConfig options) over the recipe's settings: the recipe fills what `data` leaves out."""
    if not name:
        return dict(data)
    return {**get_recipe(name).settings, **data}
