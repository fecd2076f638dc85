"""Single-file checkpoints load into the webui's classes with the right architecture, sizes, weights, dtype and
eps/v; non-checkpoints and damaged files are refused with a message naming the file."""

from __future__ import annotations

import pytest
import torch
from checkpoint_fixtures import write_tiny_checkpoint
from safetensors.torch import load_file, save_file

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.arch.detect import detect_arch
from lora_trainer.checkpoint import CheckpointError, load_checkpoint

torch.set_num_threads(1)


def _outputs(model):
    """UNet output and text conditioning at fixed inputs, through the adapter the trainer uses."""
    torch.manual_seed(0)
    adapter = get_adapter(model)
    with torch.no_grad():
        text = adapter.encode_text(["a red circle", "demo"], 1)
        x = torch.randn(2, 4, 8, 8)
        t = torch.tensor([10, 900])
        cond = model.get_learned_conditioning(["a red circle", "demo"])
        if isinstance(cond, dict):
            out = model.apply_model(x, t, cond)
        else:
            out = model.model.diffusion_model(x, t, context=cond)
    return text, out


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sd2v", "sdxl"])
def test_tiny_checkpoint_loads_as_the_same_model(tmp_path, arch):
    model, path = write_tiny_checkpoint(arch, tmp_path / f"{arch}.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.arch == arch and detect_arch(loaded.model) == arch
    assert type(loaded.model) is type(model)
    assert type(loaded.model.model.diffusion_model) is type(model.model.diffusion_model)
    a, b = model.state_dict(), loaded.model.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # same heads / layer choices: identical outputs, not just identical tensors
    (text_a, out_a), (text_b, out_b) = _outputs(model), _outputs(loaded.model)
    assert torch.equal(out_a, out_b)
    assert torch.equal(text_a.context, text_b.context)
    assert (text_a.pooled is None) == (text_b.pooled is None)
    if text_a.pooled is not None:
        assert torch.equal(text_a.pooled, text_b.pooled)
    if arch.startswith("sd2"):
        assert loaded.prediction_source.endswith("(the UNet's weights)")
        assert get_adapter(loaded.model).prediction_type == ("v" if arch == "sd2v" else "epsilon")


def test_yaml_beside_the_file_and_the_flag_override_the_weights(tmp_path):
    _, path = write_tiny_checkpoint("sd2", tmp_path / "m.safetensors")
    assert load_checkpoint(path, prediction="v").arch == "sd2v"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert load_checkpoint(path).arch == "sd2v"


def test_fp16_checkpoint_keeps_its_dtype_unless_told(tmp_path):
    _, path = write_tiny_checkpoint("sd1", tmp_path / "half.safetensors", dtype=torch.float16)
    notes = []
    on_cpu = load_checkpoint(path, log=notes.append)
    assert on_cpu.dtype == torch.float32 and any("fp16" in n for n in notes)  # fp16 matmuls on a CPU: fp32
    bf16 = load_checkpoint(path, dtype="bf16")
    assert next(bf16.model.model.diffusion_model.parameters()).dtype == torch.bfloat16
    assert bf16.model.alphas_cumprod_original.dtype == torch.float32  # the schedule stays fp32
    half = load_checkpoint(path, dtype="fp16")
    assert next(half.model.model.diffusion_model.parameters()).dtype == torch.float16


def test_ckpt_with_a_lightning_state_dict_and_old_text_keys(tmp_path):
    model, path = write_tiny_checkpoint("sd1", tmp_path / "m.safetensors")
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
           for k, v in load_file(str(path)).items()}
    torch.save({"state_dict": old, "global_step": 1}, tmp_path / "m.ckpt")
    loaded = load_checkpoint(tmp_path / "m.ckpt")
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_vae_override_replaces_the_checkpoint_vae(tmp_path):
    _, path = write_tiny_checkpoint("sd1", tmp_path / "m.safetensors")
    other, _ = write_tiny_checkpoint("sd1", tmp_path / "other.safetensors", seed=5)
    vae = {k: v.contiguous() for k, v in other.first_stage_model.state_dict().items()}
    vae["model_ema.decay"] = torch.tensor(0.9)  # ignored, as the webui ignores it
    save_file(vae, str(tmp_path / "vae.safetensors"))
    loaded = load_checkpoint(path, vae=tmp_path / "vae.safetensors")
    got = loaded.model.first_stage_model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in other.first_stage_model.state_dict().items())
    # a VAE-only file handed over as --checkpoint is refused, naming the right option
    with pytest.raises(CheckpointError, match="VAE only.*--vae"):
        load_checkpoint(tmp_path / "vae.safetensors")


def _variant(tmp_path, name, change):
    tensors = load_file(str(write_tiny_checkpoint("sd1", tmp_path / "base.safetensors")[1]))
    change(tensors)
    save_file(tensors, str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize("name, change, message", [
    ("lora.safetensors", lambda t: (t.clear(), t.update({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)})),
     "LoRA file"),
    ("inpaint.safetensors",
     lambda t: t.update({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 9, 3, 3)}), "inpainting"),
    ("refiner.safetensors", lambda t: (t.clear(), t.update({"model.diffusion_model.input_blocks.0.0.weight":
                                                              torch.zeros(32, 4, 3, 3),
                                                              "conditioner.embedders.0.model.ln_final.weight":
                                                              torch.zeros(4)})), "refiner"),
    ("sd3.safetensors", lambda t: t.update({"model.diffusion_model.joint_blocks.0.x.weight": torch.zeros(1)}), "SD3"),
    ("flux.safetensors", lambda t: (t.clear(), t.update({"double_blocks.0.img_attn.qkv.weight": torch.zeros(1)})),
     "Flux"),
    ("unet_only.safetensors", lambda t: [t.pop(k) for k in list(t) if k.startswith("cond_stage_model.")],
     "no text encoder"),
    ("pruned.safetensors", lambda t: t.pop("model.diffusion_model.out.2.weight"), "missing"),
])
def test_refuses_what_it_cannot_train(tmp_path, name, change, message):
    path = _variant(tmp_path, name, change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert name in str(info.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_file(tmp_path, suffix):
    _, path = write_tiny_checkpoint("sd1", tmp_path / "m.safetensors")
    if suffix == ".ckpt":
        torch.save(load_file(str(path)), tmp_path / "m.ckpt")
        path = tmp_path / "m.ckpt"
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(cut)
    assert "cut" in str(info.value)
