"""Webui entry of the Train LoRA extension: registers the tab, the settings section and the HTTP routes.

Everything else lives in the `lora_trainer` package next to this folder; the host adapters
`lora_trainer.ui.webui` (A1111) and `lora_trainer.ui.forge` (Forge) are the only modules that touch the webui.
"""

import os
import sys

# The webui puts the extension root on sys.path only while this file executes; keep it there so the package's
# lazy imports (done later, from callbacks and the training thread) still resolve.
_extension_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _extension_root not in sys.path:
    sys.path.append(_extension_root)

from lora_trainer.ui.forge import ForgeHost, running_forge  # noqa: E402
from lora_trainer.ui.webui import register_callbacks  # noqa: E402

register_callbacks(ForgeHost if running_forge() else None)  # one host adapter per webui: A1111 1.10 or Forge
