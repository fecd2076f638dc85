"""Issue 4: the attached LoRA computes exactly what merged weights would, and detach leaves no trace."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from torch.utils.checkpoint import checkpoint

from lora_trainer.arch import model_parts
from lora_trainer.lora_net import LoRANetwork, MultiheadAttentionLoRA
from lora_trainer.lora_net.targets import text_encoder_targets, unet_targets

PROMPTS = ["a photo of a cat", "a red car, masterpiece"]



def _randomize(net: LoRANetwork, seed: int = 0, std: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def _delta(lora) -> torch.Tensor:
    """Independent of the library: multiplier · alpha/rank · up∘down, convs in kohya's conv2d form."""
    up, down = lora.lora_up.weight.detach(), lora.lora_down.weight.detach()
    factor = lora.multiplier * lora.alpha / down.shape[0]
    if down.dim() == 4 and down.shape[2:] != (1, 1):
        return factor * F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    return factor * (up.flatten(1) @ down.flatten(1))


def _merge_into(model, net: LoRANetwork) -> int:
    parts = model_parts(model)
    targets = unet_targets(parts.unet, parts.arch, include_conv=True)
    targets += [t for te in parts.text_encoders for t in text_encoder_targets(te)]
    merged = 0
    with torch.no_grad():
        for target in targets:
            if target.names[0] not in net.loras:
                continue
            deltas = [_delta(net.loras[name]) for name in target.names]
            if target.kind == "mha":  # q, k, v on the row blocks of in_proj_weight, then out_proj
                target.module.in_proj_weight += torch.cat(deltas[:3])
                target.module.out_proj.weight += deltas[3]
            else:
                target.module.weight += deltas[0].reshape(target.module.weight.shape)
            merged += len(deltas)
    return merged


def _unet_args(model):
    unet = model_parts(model).unet
    generator = torch.Generator().manual_seed(1)
    context_dim = next(m for m in unet.modules() if hasattr(m, "transformer_blocks")).transformer_blocks[0] \
        .attn2.to_k.in_features
    kwargs = dict(timesteps=torch.tensor([10, 500]), context=torch.randn(2, 8, context_dim, generator=generator))
    if hasattr(unet, "label_emb"):
        kwargs["y"] = torch.randn(2, unet.label_emb[0][0].in_features, generator=generator)
    return torch.randn(2, 4, 8, 8, generator=generator), kwargs


def _outputs(model) -> list:
    """UNet output plus every text encoder's outputs (SDXL TE2 also returns the pooled vector)."""
    parts = model_parts(model)
    x, kwargs = _unet_args(model)
    outs = [parts.unet(x, **kwargs)]
    for te in parts.text_encoders:
        out = te.embedder(PROMPTS)
        outs.extend(out if isinstance(out, (tuple, list)) else [out])
    return outs


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_hooked_forward_equals_merged_weights(arch):
    model = tiny_model(arch)
    net = LoRANetwork.create(model, rank=4, alpha=2.0, conv_rank=3, conv_alpha=6.0, multiplier=0.7)
    _randomize(net)
    merged_model = copy.deepcopy(model)
    assert _merge_into(merged_model, net) == len(net.loras)
    with torch.no_grad():
        base = _outputs(model)
        with net.attached():
            hooked = _outputs(model)
        expected = _outputs(merged_model)
    for b, h, e in zip(base, hooked, expected):
        assert not torch.allclose(h, b, atol=1e-3), "the LoRA must change every output"
        torch.testing.assert_close(h, e, atol=2e-5, rtol=1e-4)


def test_fused_attention_dropout_path_matches_merged_path():
    model = tiny_model("sd2")
    net = LoRANetwork.create(model, rank=4, alpha=8.0, train_unet=False, multiplier=1.3)
    _randomize(net, seed=3)
    groups = [o.owner for o in net._overrides if isinstance(o.owner, MultiheadAttentionLoRA)]
    assert len(groups) == 2
    embedder = model_parts(model).text_encoders[0].embedder
    with torch.no_grad(), net.attached():
        merged = embedder(PROMPTS)
        for group in groups:
            group.prefer_unfused = True
        unfused = embedder(PROMPTS)
    torch.testing.assert_close(unfused, merged, atol=2e-5, rtol=1e-4)


def _snapshot(model) -> dict:
    def digest(t: torch.Tensor) -> str:
        return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()

    return {
        "state": {k: (digest(v), v.dtype, v.device, tuple(v.shape), v.data_ptr())
                  for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: (id(p), p.requires_grad, p.grad is None) for k, p in model.named_parameters()},
        "modules": {k: (type(m), m.training, tuple(sorted(m.__dict__)), len(m._forward_hooks),
                        len(m._forward_pre_hooks)) for k, m in model.named_modules()},
    }


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_detach_restores_everything_bit_for_bit(arch):
    model = tiny_model(arch)
    before = _snapshot(model)
    with torch.no_grad():
        outputs_before = _outputs(model)
    net = LoRANetwork.create(model, rank=4, alpha=4.0, conv_rank=2)
    _randomize(net)
    net.attach()
    assert {k: v[4] for k, v in _snapshot(model)["state"].items()} == {k: v[4] for k, v in before["state"].items()}, \
        "attached: same tensors, no copies, nothing registered on the model"
    loss = sum(out.float().square().mean() for out in _outputs(model))
    loss.backward()
    without_grad = [name for name, lora in net.loras.items() if lora.lora_up.weight.grad is None]
    # SDXL TE1 feeds the UNet its penultimate hidden state, so its last layer never reaches the loss (as in kohya)
    assert without_grad == ([f"lora_te1_text_model_encoder_layers_2_{leaf}" for leaf in (
        "self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")]
        if arch == "sdxl" else [])
    net.detach()
    net.detach()
    for p in model.parameters():
        p.grad = None  # the tiny model's own weights are trainable; their grads are not what we compare
    assert _snapshot(model) == before
    with torch.no_grad():
        for old, new in zip(outputs_before, _outputs(model)):
            assert torch.equal(old, new)


def test_attach_is_idempotent_and_a_failed_attach_rolls_back(monkeypatch):
    model = tiny_model("sd2")
    before = _snapshot(model)
    net = LoRANetwork.create(model, rank=4, alpha=4.0)
    _randomize(net)
    with torch.no_grad():
        with net.attached():
            once = _outputs(model)
            net.attach()
            assert all(torch.equal(a, b) for a, b in zip(once, _outputs(model))), "attach twice = attach once"
    assert _snapshot(model) == before

    broken = net._overrides[len(net._overrides) // 2]
    monkeypatch.setattr(broken, "install", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        net.attach()
    assert not net.is_attached and _snapshot(model) == before


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradients_flow_under_checkpointing(use_reentrant):
    sd1, sd2 = tiny_model("sd1"), tiny_model("sd2")
    block = model_parts(sd1).unet.input_blocks[1][1].transformer_blocks[0]
    resblock = model_parts(sd2).text_encoders[0].root.resblocks[0]
    nets = [LoRANetwork.create(sd1, rank=4, dropout=0.25, train_text_encoder=False),
            LoRANetwork.create(sd2, rank=4, dropout=0.25, train_unet=False)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, block.attn1.to_q.in_features, generator=generator)
    context = torch.randn(2, 8, block.attn2.to_k.in_features, generator=generator)
    tokens = torch.randn(8, 2, resblock.attn.embed_dim, generator=generator)  # OpenCLIP 2.20: (L, N, D)

    def run(wrap) -> list:
        for net in nets:
            net.zero_grad(set_to_none=True)
        torch.manual_seed(123)  # the same dropout masks in both runs
        loss = wrap(block, x.clone().requires_grad_(), context).square().mean()
        loss = loss + wrap(resblock, tokens.clone().requires_grad_()).square().mean()
        loss.backward()
        return [p.grad.clone() for net in nets for p in net.trainable_parameters() if p.grad is not None]

    for net in nets:
        _randomize(net, seed=5)
        net.train()
        net.attach()
    try:
        plain = run(lambda module, *args: module(*args))
        checkpointed = run(lambda module, *args: checkpoint(module, *args, use_reentrant=use_reentrant))
    finally:
        for net in nets:
            net.detach()
            net.eval()
    used = 12 + 6  # the transformer block's 10 + the resblock's 6 LoRA modules, × down/up
    assert len(plain) == len(checkpointed) == 2 * (used - 2)  # proj_in/out are outside the block
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)


def test_multiplier_dropout_and_flags():
    model = tiny_model("sd1")
    flags = {k: m.training for k, m in model.named_modules()}
    net = LoRANetwork.create(model, rank=4, alpha=2.0, dropout=0.5, train_text_encoder=False)
    _randomize(net)
    x, kwargs = _unet_args(model)
    unet = model_parts(model).unet
    with torch.no_grad(), net.attached():
        net.multiplier = 0.0
        assert all(m.multiplier == 0.0 for m in net.loras.values())
        assert torch.equal(unet(x, **kwargs), _outputs_without(net, unet, x, kwargs))
        net.multiplier = 1.0
        net.eval()
        first, second = unet(x, **kwargs), unet(x, **kwargs)
        assert torch.equal(first, second), "eval: no dropout"
        net.train()
        assert not torch.equal(unet(x, **kwargs), unet(x, **kwargs)), "train: neuron dropout on lora_down"
        net.eval()
    assert {k: m.training for k, m in model.named_modules()} == flags, "train()/eval() touch LoRA modules only"
    assert net.is_attached is False


def _outputs_without(net, unet, x, kwargs):
    net.detach()
    try:
        return unet(x, **kwargs)
    finally:
        net.attach()


def test_param_groups_follow_kohya():
    model = tiny_model("sdxl")
    net = LoRANetwork.create(model, rank=2)
    groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("textencoder", 5e-5), ("unet", 1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(net.trainable_parameters()) == 2 * (192 + 36)
    assert [g["name"] for g in net.param_groups(1e-4, 0)] == ["unet"]
    unet_only = LoRANetwork.create(model, rank=2, train_text_encoder=False)
    assert not unet_only.text_encoder_modules and [g["name"] for g in unet_only.param_groups(1e-4, 1e-4)] == ["unet"]
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.to("cpu").parameters())
    with pytest.raises(ValueError):
        net.to("cpu", dtype=torch.float16)
