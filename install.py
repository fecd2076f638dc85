"""Run by the webui at launch, in a subprocess with the webui's Python (see docs/WEBUI.md).

Installs only what the trainer needs and the webui lacks, never a package the webui pins (its launcher would
revert the change at the next start), and only reports the optional optimizer packages.
"""

import importlib.util
import os
import re
import sys

# (pip name, import name, why). Everything else the trainer uses (torch, safetensors, numpy, Pillow) is a webui pin.
REQUIRED = [
    ("tqdm", "tqdm", "progress output of the command line"),
]
OPTIONAL = [
    ("bitsandbytes", "bitsandbytes", "optimizers AdamW8bit, Lion8bit (CUDA GPUs)"),
    ("prodigyopt", "prodigyopt", "optimizer Prodigy"),
    ("lion-pytorch", "lion_pytorch", "optimizer Lion"),
]


def webui_pins(webui_root):
    """Names of the packages pinned in the webui's requirements_versions.txt (lower case, '-' for '_')."""
    path = os.path.join(webui_root, "requirements_versions.txt")
    if not os.path.isfile(path):
        return set()
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\s*([A-Za-z0-9_.\-]+)", line.split("#")[0])
            if match:
                names.add(match.group(1).lower().replace("_", "-"))
    return names


def to_install(required, is_installed, pinned):
    """The pip names to install: missing and not pinned by the webui."""
    return [pip_name for pip_name, module, _ in required
            if not is_installed(pip_name, module) and pip_name.lower().replace("_", "-") not in pinned]


def missing_optional(optional, is_installed):
    return [(pip_name, why) for pip_name, module, why in optional if not is_installed(pip_name, module)]


def _is_installed(pip_name, module):
    try:
        import launch  # the webui's launcher: checks distributions, then modules

        if launch.is_installed(pip_name):
            return True
    except ImportError:
        pass
    return importlib.util.find_spec(module) is not None


def main():
    webui_root = next((p for p in sys.path if p and os.path.isfile(os.path.join(p, "launch.py"))), os.getcwd())
    for pip_name in to_install(REQUIRED, _is_installed, webui_pins(webui_root)):
        try:
            import launch
        except ImportError:  # run by hand, outside the webui
            print(f"[Train LoRA] missing: pip install {pip_name}")
            continue
        launch.run_pip(f"install {pip_name}", f"{pip_name} for Train LoRA")
    for pip_name, why in missing_optional(OPTIONAL, _is_installed):
        print(f"[Train LoRA] optional: pip install {pip_name}  ({why})")


if __name__ == "__main__":
    main()
