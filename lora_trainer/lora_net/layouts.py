"""The module layout of the real architectures, to check a LoRA file without loading a model.

`unet_paths` replays how ldm/sgm `UNetModel.__init__` numbers its blocks (2 res blocks per level, a Downsample
after every level but the last, output levels of 3 blocks with an Upsample at the end of each but the last), so
the same code also describes the tiny test UNets (tests compare it with the live walk in targets.py).
"""

from __future__ import annotations

from .naming import HF_CLIP_LEAVES, hf_clip_lora_name, unet_lora_name

TRANSFORMER_BLOCK_LEAVES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                            "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
# channel multipliers, transformer depth per level, depth of the middle block (v1/v2-inference.yaml, sd_xl_base.yaml)
UNET_LAYOUTS = {
    "sd": dict(channel_mult=(1, 2, 4, 4), depths=(1, 1, 1, 0), middle_depth=1),
    "sdxl": dict(channel_mult=(1, 2, 4), depths=(0, 2, 10), middle_depth=10),
}
TEXT_ENCODER_LAYERS = {  # layers with LoRA modules (SD2 drops OpenCLIP's last block: the webui runs the penultimate)
    "sd1": {"lora_te": 12}, "sd2": {"lora_te": 23}, "sd2v": {"lora_te": 23}, "sdxl": {"lora_te1": 12, "lora_te2": 32},
}
CONTEXT_DIM_TO_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}  # attn2.to_k input width of the real UNets
TEXT_WIDTH_TO_ARCH = {768: "sd1", 1024: "sd2"}  # lora_te_ q_proj input width (CLIP-L vs OpenCLIP-H)


def unet_paths(channel_mult, depths, middle_depth: int, num_res_blocks: int = 2, include_conv: bool = True) -> list:
    """Paths (under model.diffusion_model) of every LoRA target of an ldm/sgm UNet with this layout."""
    paths: list = []

    def transformer(base: str, depth: int) -> None:
        paths.extend([f"{base}.proj_in", f"{base}.proj_out"])
        paths.extend(f"{base}.transformer_blocks.{b}.{leaf}" for b in range(depth) for leaf in TRANSFORMER_BLOCK_LEAVES)

    def resblock(base: str, in_ch: int, out_ch: int) -> None:
        if include_conv:
            paths.extend(f"{base}.{leaf}" for leaf in ("in_layers.2", "out_layers.3", "emb_layers.1"))
            if in_ch != out_ch:
                paths.append(f"{base}.skip_connection")

    ch, skip_chans, n = 1, [1], 1  # channels in units of model_channels
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            resblock(f"input_blocks.{n}.0", ch, mult)
            if depths[level]:
                transformer(f"input_blocks.{n}.1", depths[level])
            ch = mult
            skip_chans.append(ch)
            n += 1
        if level != len(channel_mult) - 1:
            if include_conv:
                paths.append(f"input_blocks.{n}.0.op")
            skip_chans.append(ch)
            n += 1
    resblock("middle_block.0", ch, ch)
    transformer("middle_block.1", middle_depth)
    resblock("middle_block.2", ch, ch)
    n = 0
    for level in reversed(range(len(channel_mult))):
        mult = channel_mult[level]
        for i in range(num_res_blocks + 1):
            resblock(f"output_blocks.{n}.0", ch + skip_chans.pop(), mult)
            ch, inner = mult, 1
            if depths[level]:
                transformer(f"output_blocks.{n}.1", depths[level])
                inner = 2
            if level and i == num_res_blocks and include_conv:
                paths.append(f"output_blocks.{n}.{inner}.conv")
            n += 1
    return paths


def text_encoder_names(prefix: str, num_layers: int) -> list:
    return [hf_clip_lora_name(prefix, layer, leaf) for layer in range(num_layers) for leaf in HF_CLIP_LEAVES]


def expected_lora_names(arch: str, include_conv: bool = True) -> dict:
    """kohya name → part ("unet" or the text-encoder prefix) for every module a LoRA of the real `arch` may have."""
    layout = UNET_LAYOUTS["sdxl" if arch == "sdxl" else "sd"]
    names = {unet_lora_name(arch, path): "unet" for path in unet_paths(**layout, include_conv=include_conv)}
    for prefix, layers in TEXT_ENCODER_LAYERS[arch].items():
        names.update((name, prefix) for name in text_encoder_names(prefix, layers))
    return names


def compvis_style_unet_names(arch: str, include_conv: bool = True) -> set:
    """SD1/SD2 UNet names written from compvis paths (`lora_unet_input_blocks_1_1_...`): A1111 and ComfyUI read
    them, diffusers and kohya do not."""
    layout = UNET_LAYOUTS["sdxl" if arch == "sdxl" else "sd"]
    return {"lora_unet_" + path.replace(".", "_") for path in unet_paths(**layout, include_conv=include_conv)}


def same_family(guess: str | None, arch: str) -> bool:
    """Whether a file's guessed architecture fits a model of `arch` (SD2 and SD2-v share weights layout)."""
    if guess is None or guess == arch:
        return True
    sd2 = {"sd2", "sd2v"}
    return (guess in sd2 and arch in sd2) or (guess == "sd1/sd2" and arch != "sdxl")


def guess_arch(shapes: dict, metadata: dict | None = None) -> tuple:
    """(arch, basis) of a LoRA from its tensor shapes (key → shape) and metadata. arch is "sd1", "sd2", "sd2v",
    "sdxl", "sd1/sd2" (names only: SD1 and SD2 share them) or None; basis says what decided it."""
    metadata = metadata or {}
    v_param = metadata.get("ss_base_model_version") == "sd_v2_v" or metadata.get("modelspec.prediction_type") == "v"

    def refine(arch: str) -> str:
        return "sd2v" if arch == "sd2" and v_param else arch

    for key, shape in sorted(shapes.items()):
        if key.startswith("lora_unet_") and key.endswith("attn2_to_k.lora_down.weight") and len(shape) == 2:
            if shape[1] in CONTEXT_DIM_TO_ARCH:
                return refine(CONTEXT_DIM_TO_ARCH[shape[1]]), f"cross-attention input width {shape[1]}"
        if key.startswith("lora_te_") and key.endswith("self_attn_q_proj.lora_down.weight"):
            if shape[1] in TEXT_WIDTH_TO_ARCH:
                return refine(TEXT_WIDTH_TO_ARCH[shape[1]]), f"text encoder width {shape[1]}"
    version = metadata.get("ss_base_model_version", "")
    from_metadata = {"sd_v1": "sd1", "sd_v2": "sd2", "sd_v2_v": "sd2v"}
    if version.startswith("sdxl"):
        return "sdxl", f"metadata ss_base_model_version={version}"
    if version in from_metadata:
        return from_metadata[version], f"metadata ss_base_model_version={version}"
    names = [key.partition(".")[0] for key in shapes]
    sgm = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
    if any(name.startswith(("lora_te1_", "lora_te2_") + sgm) for name in names):
        return "sdxl", "key names (lora_te1_/lora_te2_ or SGM UNet names)"
    if any(name.startswith(("lora_te_", "lora_unet_down_blocks_", "lora_unet_mid_block_", "lora_unet_up_blocks_"))
           for name in names):
        return "sd1/sd2", "key names (SD1 and SD2 share them)"
    return None, "nothing recognisable"
