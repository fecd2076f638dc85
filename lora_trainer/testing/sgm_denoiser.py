"""sgm's `DiscreteDenoiser` as far as the trainer and the webui look at it: `model.denoiser.scaling` is an
`EpsScaling` or a `VScaling` object, and the webui's `extend_sdxl` sets `model.parameterization` from its class.
The class names are sgm's (`sgm.modules.diffusionmodules.denoiser_scaling`); the scalings are the standard
ε- and v-parameterisation preconditioning (c_skip, c_out, c_in, c_noise) for a noise level σ."""

from __future__ import annotations

import torch
from torch import nn


class EpsScaling:
    def __call__(self, sigma: torch.Tensor):
        return torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1.0) ** 0.5, sigma.clone()


class VScaling:
    def __call__(self, sigma: torch.Tensor):
        return 1.0 / (sigma**2 + 1.0), -sigma / (sigma**2 + 1.0) ** 0.5, 1.0 / (sigma**2 + 1.0) ** 0.5, sigma.clone()


class DiscreteDenoiser(nn.Module):
    def __init__(self, v_prediction: bool = False):
        super().__init__()
        self.scaling = VScaling() if v_prediction else EpsScaling()
