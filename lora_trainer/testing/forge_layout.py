"""Models in Forge's layout (arch/forge.py), for tests without and with a Forge checkout.

`build_forge_standin(arch)`: no Forge needed. Forge's glue (engine, patchers, KModel, IntegratedCLIP, the VAE's
encode/process_in) rebuilt as thin stand-ins around real module classes of the same layout: ldm/sgm UNets (the
block structure and names `IntegratedUNet2DConditionModel` copies), transformers `CLIPTextModel`s in the HF layout
Forge converts every tower to (SD2's ViT-H with OpenCLIP's unused last block dropped, as Forge's config does).

`build_forge_engine(arch, forge_dir)`: Forge's own classes (backend/nn, backend/operations, backend/patcher,
backend/diffusion_engine/base.py) at tiny sizes, loaded from `forge_dir` (tests skip unless FORGE_DIR is set).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
from torch import nn

ENGINE_NAMES = {"sd1": "StableDiffusion", "sd2": "StableDiffusion2", "sd2v": "StableDiffusion2",
                "sdxl": "StableDiffusionXL"}
TE_KEYS = {"sd1": ("clip_l",), "sd2": ("clip_h",), "sd2v": ("clip_h",), "sdxl": ("clip_l", "clip_g")}


class StandinIntegratedCLIP(nn.Module):
    """backend/nn/clip.py IntegratedCLIP: `.transformer` (CLIPTextModel) + `.transformer.text_projection`."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.logit_scale = nn.Parameter(torch.tensor(4.6055))
        width = transformer.config.hidden_size
        transformer.text_projection = nn.Linear(width, width, bias=False)


class StandinVAE(nn.Module):
    """IntegratedAutoencoderKL's interface over ldm's AutoencoderKL: encode() samples, process_in() scales."""

    def __init__(self, autoencoder: nn.Module, scaling_factor: float):
        super().__init__()
        self.autoencoder = autoencoder
        self.scaling_factor, self.shift_factor = scaling_factor, 0.0

    def encode(self, x, regulation=None):
        return self.autoencoder.encode(x).sample()

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scaling_factor


class StandinPredictor(nn.Module):
    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str):
        super().__init__()
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().float().clone())


class StandinKModel(nn.Module):
    def __init__(self, unet: nn.Module, predictor: nn.Module):
        super().__init__()
        self.diffusion_model, self.predictor = unet, predictor
        self.storage_dtype = self.computation_dtype = next(unet.parameters()).dtype


def _hf_clip(width: int, layers: int, heads: int, seed: int):
    from transformers import CLIPTextModel, CLIPTokenizer

    from .randomize import randomize_
    from .text_encoders import tiny_clip_text_dir

    folder = tiny_clip_text_dir(width, layers, heads)
    torch.manual_seed(seed)
    model = CLIPTextModel.from_pretrained(str(folder))
    return randomize_(model, seed), CLIPTokenizer.from_pretrained(str(folder))


def _patcher(model):
    return SimpleNamespace(model=model, lora_patches={})


def build_forge_standin(arch: str, seed: int = 0):
    """A Forge-layout engine whose UNet and VAE are the tiny ldm/sgm model's own (so LoRA key names and outputs
    can be compared with the A1111 layout of the same weights)."""
    from . import build_tiny_model

    base = build_tiny_model(arch, seed=seed)
    te_modules, tokenizers = {}, {}
    if arch == "sdxl":
        te1 = base.conditioner.embedders[0]
        width = base.conditioner.embedders[1].model.transformer.width
        layers = len(base.conditioner.embedders[1].model.transformer.resblocks)
        te_modules["clip_l"], tokenizers["clip_l"] = te1.transformer, te1.tokenizer
        te_modules["clip_g"], tokenizers["clip_g"] = _hf_clip(width, layers, 4, seed + 1)
        tokenizers["clip_g"].pad_token = "!"  # SDXL's tokenizer_2 pads with "!" (id 0), after the first EOS
    elif arch == "sd1":
        te_modules["clip_l"], tokenizers["clip_l"] = base.cond_stage_model.transformer, base.cond_stage_model.tokenizer
    else:
        tower = base.cond_stage_model.model.transformer
        te_modules["clip_h"], tokenizers["clip_h"] = _hf_clip(tower.width, len(tower.resblocks) - 1, 4, seed + 1)
    clips = nn.ModuleDict({key: StandinIntegratedCLIP(module) for key, module in te_modules.items()})
    prediction = "v_prediction" if arch == "sd2v" else "epsilon"
    kmodel = StandinKModel(base.model.diffusion_model, StandinPredictor(base.alphas_cumprod, prediction))
    vae = StandinVAE(base.first_stage_model, float(base.scale_factor))
    objects = SimpleNamespace(unet=_patcher(kmodel), vae=SimpleNamespace(first_stage_model=vae, patcher=_patcher(vae)),
                              clip=SimpleNamespace(cond_stage_model=clips, tokenizer=SimpleNamespace(**tokenizers),
                                                   patcher=_patcher(clips)), clipvision=None)
    engine = type(ENGINE_NAMES[arch], (), {})()
    engine.forge_objects = objects
    engine.is_inpaint = False
    engine.is_sd1, engine.is_sd2, engine.is_sdxl = arch == "sd1", arch in ("sd2", "sd2v"), arch == "sdxl"
    engine.a1111_layout = base  # the same UNet/VAE in the ldm/sgm layout
    return engine


# ---- Forge's own classes (FORGE_DIR) -----------------------------------------------------------------------------
def import_forge_backend(forge_dir: str):
    """Make `backend` (and Forge's vendored `gguf`) importable; returns the `backend` package."""
    from .torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # diffusers -> transformers -> torchvision, imported by backend.modules
    for path in (forge_dir, f"{forge_dir}/packages_3rdparty"):
        if path not in sys.path:
            sys.path.insert(0, path)
    argv, sys.argv = sys.argv, [sys.argv[0], "--always-cpu"]  # backend/args.py parses the command line
    try:
        import backend.memory_management  # noqa: F401
        import backend.patcher.unet  # noqa: F401
    finally:
        sys.argv = argv
    import backend

    return backend


TINY_FORGE_UNET = {  # IntegratedUNet2DConditionModel kwargs as huggingface_guess derives them, shrunk
    "sd1": dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[2, 2], num_heads=8, num_head_channels=-1,
                transformer_depth=[1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
                context_dim=32, use_linear_in_transformer=False, adm_in_channels=None),
    "sd2": dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[2, 2], num_heads=-1, num_head_channels=16,
                transformer_depth=[1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
                context_dim=32, use_linear_in_transformer=True, adm_in_channels=None),
    "sdxl": dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[2, 2], num_heads=-1, num_head_channels=16,
                 transformer_depth=[0, 0, 2, 2], transformer_depth_output=[0, 0, 0, 2, 2, 2],
                 transformer_depth_middle=2, context_dim=64, use_linear_in_transformer=True, adm_in_channels=32 + 1536,
                 num_classes="sequential"),
}


def _random_state(module: nn.Module, shapes: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in shapes.items()}


def _load_random(build, seed: int):
    """Build twice: plain torch layers (to learn the state-dict shapes), then Forge's operations (whose Linear has
    no weight until one is loaded), and load random weights into the latter, as Forge's loader does."""
    from backend.operations import using_forge_operations
    from transformers import modeling_utils

    shapes = {k: v.shape for k, v in build().state_dict().items()}
    with modeling_utils.no_init_weights():  # as backend/loader.py: HF init would touch the still-missing weights
        with using_forge_operations(device=torch.device("cpu"), dtype=torch.float32, manual_cast_enabled=False):
            model = build()
    model.load_state_dict(_random_state(model, shapes, seed), strict=False)
    return model


def build_forge_engine(arch: str, forge_dir: str, seed: int = 0):
    import_forge_backend(forge_dir)
    from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
    from backend.nn.clip import IntegratedCLIP
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    from backend.patcher.clip import CLIP
    from backend.patcher.unet import UnetPatcher
    from backend.patcher.vae import VAE
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .text_encoders import tiny_clip_text_dir

    base_arch = "sd2" if arch == "sd2v" else arch
    cfg = dict(in_channels=4, out_channels=4, use_spatial_transformer=True, **TINY_FORGE_UNET[base_arch])
    unet = _load_random(lambda: IntegratedUNet2DConditionModel(**cfg), seed)
    unet.storage_dtype = unet.computation_dtype = torch.float32
    unet.load_device = unet.offload_device = unet.initial_device = torch.device("cpu")
    widths = {"clip_l": 32, "clip_h": 32, "clip_g": 32}
    clips, tokenizers = {}, {}
    for i, key in enumerate(TE_KEYS[arch]):
        folder = tiny_clip_text_dir(widths[key], 3, 4)
        config = CLIPTextConfig.from_pretrained(str(folder))
        clips[key] = _load_random(lambda c=config: IntegratedCLIP(CLIPTextModel, c, add_text_projection=True),
                                  seed + 1 + i)
        tokenizers[key] = CLIPTokenizer.from_pretrained(str(folder))
        if key == "clip_g":
            tokenizers[key].pad_token = "!"
    vae_cfg = dict(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                   up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=1, norm_num_groups=32)
    vae = _load_random(lambda: IntegratedAutoencoderKL(**vae_cfg), seed + 9)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type="v_prediction" if arch == "sd2v" else "epsilon")
    objects = ForgeObjects(unet=UnetPatcher.from_model(unet, scheduler, config=None),
                           clip=CLIP(model_dict=clips, tokenizer_dict=tokenizers), vae=VAE(model=vae), clipvision=None)
    engine_cls = type(ENGINE_NAMES[arch], (ForgeDiffusionEngine,), {})
    engine = engine_cls.__new__(engine_cls)  # the real __init__ wants a huggingface_guess config and files
    engine.model_config, engine.is_inpaint, engine.current_lora_hash = None, False, str([])
    engine.fix_for_webui_backward_compatibility()
    engine.is_sd1, engine.is_sd2, engine.is_sdxl = arch == "sd1", arch in ("sd2", "sd2v"), arch == "sdxl"
    engine.forge_objects = objects
    engine.forge_objects_original = objects.shallow_copy()
    engine.forge_objects_after_applying_lora = objects.shallow_copy()
    return engine
