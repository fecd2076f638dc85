"""Make `import torchvision` work when the installed wheel is a CUDA build on a CPU-only torch.

open_clip imports torchvision (for image transforms). The only torchvision wheel the registry serves here is a
CUDA build whose compiled ops are missing on the CPU torch, so its import dies registering fake kernels for
`torchvision::nms` and friends. Training never calls those ops, so defining placeholder schemas lets the import
finish. Only used by the tiny-model builders (tests, demo, bench), and only when the real import fails.
"""

from __future__ import annotations

import re
import sys

_placeholder_lib = None


def ensure_torchvision_importable() -> None:
    global _placeholder_lib
    import torch

    for _ in range(64):
        try:
            import torchvision  # noqa: F401

            return
        except RuntimeError as exc:
            missing = re.search(r"torchvision::(\w+)", str(exc))
            if not missing:
                raise
            for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
                del sys.modules[name]
            if _placeholder_lib is None:
                _placeholder_lib = torch.library.Library("torchvision", "DEF")
            _placeholder_lib.define(f"{missing.group(1)}(Tensor x) -> Tensor")
        except ModuleNotFoundError:
            return  # no torchvision at all: open_clip will say so itself
    raise RuntimeError("torchvision could not be made importable")
