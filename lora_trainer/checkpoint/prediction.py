"""eps or v for an SD2 checkpoint, decided as the webui decides: a `.yaml` config beside the file wins
(`find_checkpoint_config_near_filename`), else the weights (`is_using_v_parameterization_for_sd2`): at t=999 on a
flat input, a v-model's UNet output minus the input averages below -1."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


def prediction_from_yaml(checkpoint: Path) -> Optional[str]:
    config = checkpoint.with_suffix(".yaml")
    if not config.is_file():
        return None
    from omegaconf import OmegaConf

    params = OmegaConf.load(config).get("model", {}).get("params", {})
    return "v" if params.get("parameterization", "eps") == "v" else "eps"


@torch.no_grad()
def unet_is_v_prediction(unet: torch.nn.Module, context_dim: int) -> bool:
    """The webui's test, on the checkpoint's own UNet (fp32, on the CPU)."""
    x = torch.ones((1, 4, 8, 8)) * 0.5
    cond = torch.ones((1, 2, context_dim)) * 0.5
    out = (unet(x, torch.asarray([999]), context=cond) - x).mean().item()
    return out < -1
