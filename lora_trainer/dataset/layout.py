"""Which folders hold the images: kohya's `N_name` subfolders, a flat folder, or a mistake we can explain.

kohya only looks at the *immediate* subfolders of the folder it is given and silently ignores anything not
named `<repeats>_<class tokens>`, which produces the famous "No data found". Here every case either works or
ends in one sentence saying what to move or rename (reference §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from .probe import IMAGE_EXTENSIONS

CACHE_DIR_NAME = ".lora_trainer_cache"
_OS_JUNK = {"thumbs.db", "desktop.ini", "__macosx"}  # never dataset content; not worth a line in the report
EXAMPLE = "10_mychar"  # used in advice: 10 repeats, class tokens "mychar"


@dataclass
class Subset:
    path: Path
    name: str
    repeats: int
    class_tokens: str
    is_reg: bool


@dataclass
class Layout:
    subsets: List[Subset] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    flat: bool = False
    fix: str = ""  # advice when no subset was found


def parse_folder_name(name: str) -> Optional[Tuple[int, str]]:
    """kohya's rule: split on the first "_", the head must be an int. "10_sks dog" -> (10, "sks dog"),
    "5_" -> (5, ""), "10" -> (10, ""). None when the head is not a number."""
    head, _, tail = name.partition("_")
    try:
        return int(head), tail
    except ValueError:
        return None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_dir(path: Path) -> List[Path]:
    """Visible entries, sorted (hidden files, OS junk and our cache folder are not dataset content)."""
    try:
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.name.lower() not in _OS_JUNK)
    except OSError:
        return []


def _count_images(path: Path) -> int:
    return sum(1 for p in list_dir(path) if is_image(p) and p.is_file())


def _find_nested_dataset(root: Path, limit: int = 200) -> Optional[Path]:
    """A folder below `root` that holds `N_name` subfolders with images: the folder the user meant."""
    for checked, child in enumerate(p for p in list_dir(root) if p.is_dir()):
        if checked >= limit:
            break
        for grandchild in list_dir(child):
            parsed = parse_folder_name(grandchild.name)
            if parsed and parsed[0] >= 1 and grandchild.is_dir() and _count_images(grandchild):
                return child
    return None


def discover(root: Path, is_reg: bool) -> Layout:
    layout = Layout()
    kind = "regularisation" if is_reg else "train"
    if not root.exists():
        layout.fix = f"The {kind} folder {root} does not exist; check the path."
        return layout
    if not root.is_dir():
        layout.fix = f"{root} is a file; give the {kind} folder that holds your image folders."
        return layout

    entries = list_dir(root)
    subdirs = [p for p in entries if p.is_dir()]
    loose_images = [p for p in entries if p.is_file() and is_image(p)]
    named: List[Subset] = []
    for sub in subdirs:
        parsed = parse_folder_name(sub.name)
        if parsed is None:
            found = _count_images(sub)
            what = f"its {found} images are not used" if found else "not scanned"
            layout.skipped.append((str(sub), f"folder name does not start with a repeat count ({what}); rename it "
                                             f"like 10_{sub.name} (10 repeats, class tokens '{sub.name}')"))
        elif parsed[0] < 1:
            layout.skipped.append((str(sub), f"repeat count {parsed[0]} in the folder name; it must be 1 or more"))
        else:
            named.append(Subset(sub, sub.name, parsed[0], parsed[1], is_reg))

    if named:
        layout.subsets = named
        for img in loose_images:
            layout.skipped.append((str(img), "image lies next to the N_name folders, not inside one; move it into "
                                             "one of them"))
        return layout

    if loose_images:
        parsed = parse_folder_name(root.name)
        if parsed and parsed[0] >= 1:
            # The classic kohya mistake (pointing at the image folder itself) — it works here, but say so.
            layout.subsets = [Subset(root, root.name, parsed[0], parsed[1], is_reg)]
            layout.warnings.append(
                f"You gave the image folder '{root.name}' itself; it is used as {parsed[0]} repeats of "
                f"'{parsed[1]}'. kohya sd-scripts would report 'No data found' here: for kohya, give the parent "
                f"folder {root.parent} instead.")
        else:
            layout.subsets = [Subset(root, root.name, 1, "", is_reg)]
            layout.flat = True
        return layout

    # Nothing usable at this level: work out what the user most likely meant.
    parsed = parse_folder_name(root.name)
    nested = _find_nested_dataset(root)
    image_dirs = [d for d in subdirs if _count_images(d)]
    if nested is not None:
        # Replace the "rename it" advice for that folder: it is the right folder, just one level too deep.
        layout.skipped = [(p, r) if p != str(nested) else (p, "holds the N_name image folders: give this folder "
                                                               "itself as the train folder")
                          for p, r in layout.skipped]
        layout.fix = (f"No images directly in {root} or its N_name subfolders. The dataset seems to be one level "
                      f"down: give {nested} instead.")
    elif image_dirs:
        d = image_dirs[0]
        layout.fix = (f"The images are in '{d.name}', whose name has no repeat count. Rename it like "
                      f"10_{d.name} (10 repeats, class tokens '{d.name}').")
    elif parsed and parsed[0] >= 1:
        layout.fix = f"The folder {root} has no images (png, jpg, jpeg, webp, bmp). Put your images in it."
    else:
        layout.fix = (f"No images found in {root}. Put your images in a subfolder named like {EXAMPLE} "
                      f"({kind} folder/{EXAMPLE}/image.png: 10 repeats, class tokens 'mychar').")
    return layout
