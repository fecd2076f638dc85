"""Optimizers by name (optional packages with a clear message when missing), schedulers, precision, state IO."""

from __future__ import annotations

import pytest
import torch
from test_train_loop import single_torch_thread  # noqa: F401

from lora_trainer.config import OPTIMIZERS, SCHEDULERS
from lora_trainer.train import MissingPackage, TrainError
from lora_trainer.train.optimizers import build_optimizer
from lora_trainer.train.precision import resolve_precision
from lora_trainer.train.schedulers import build_scheduler
from lora_trainer.train.state import _join, _split, load_state, save_state


def _groups():
    torch.manual_seed(0)
    unet, te = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
    return [{"params": list(te.parameters()), "lr": 5e-5}, {"params": list(unet.parameters()), "lr": 1e-4}]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name):
    groups = _groups()
    lr = {"Prodigy": 1.0}.get(name)
    if lr:
        for g in groups:
            g["lr"] = lr
    optimizer, description = build_optimizer(name, groups)
    before = [p.detach().clone() for g in groups for p in g["params"]]
    for g in groups:
        for p in g["params"]:
            p.grad = torch.randn_like(p)
    optimizer.step()
    after = [p for g in groups for p in g["params"]]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]  # per-part learning rates kept
    assert description.split(".")[-1].startswith(name)


def test_optimizer_args_are_passed_and_shown():
    optimizer, description = build_optimizer("AdamW", _groups(), {"weight_decay": 0.1, "betas": (0.9, 0.99)})
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    assert description == "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))"


def test_missing_optional_package_gives_a_clear_message(monkeypatch):
    import importlib
    import types

    from lora_trainer.train import optimizers

    def import_module(name):
        if name.startswith("bitsandbytes"):
            raise ModuleNotFoundError("No module named 'bitsandbytes'")
        return importlib.import_module(name)

    monkeypatch.setattr(optimizers, "importlib", types.SimpleNamespace(import_module=import_module))
    with pytest.raises(MissingPackage, match=r"AdamW8bit needs the Python package 'bitsandbytes'.*choose AdamW"):
        build_optimizer("AdamW8bit", _groups())


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_warm_up_and_end_where_expected(name):
    optimizer, _ = build_optimizer("AdamW", _groups())
    warmup = 0 if name == "constant" else 2
    scheduler = build_scheduler(name, optimizer, total_steps=10, warmup_steps=warmup, num_cycles=2, power=1.0)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[1])
        optimizer.step()
        scheduler.step()
    if warmup:
        assert lrs[0] == 0 and lrs[1] == pytest.approx(5e-5)
    assert max(lrs) == pytest.approx(1e-4)
    if name in ("linear", "cosine", "polynomial"):
        assert lrs[-1] < 2e-5 and lrs[2:] == sorted(lrs[2:], reverse=True)  # decays after the warm-up
    if name.startswith("constant"):
        assert lrs[-1] == pytest.approx(1e-4)


def test_adafactor_uses_the_given_learning_rate_by_default():
    optimizer, _ = build_optimizer("Adafactor", _groups())
    assert optimizer.defaults["relative_step"] is False
    assert [g["lr"] for g in optimizer.param_groups] == [5e-5, 1e-4]


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, torch.float32).name == "fp32"
    fallback = resolve_precision("fp16", cpu, torch.float32)
    assert fallback.name == "fp32" and "not supported" in fallback.note and fallback.grad_scaler() is None
    assert resolve_precision("bf16", cpu, torch.float32).autocast_dtype == torch.bfloat16
    with pytest.raises(TrainError, match="--no-half"):
        resolve_precision("auto", cpu, torch.float16)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, torch.float16).name == "fp16"  # the webui's .half() model
    assert resolve_precision("fp32", cuda, torch.float16).name == "fp16"  # fp32 compute needs --no-half
    assert resolve_precision("fp16", cuda, torch.float32).name == "fp16"


def test_state_structures_round_trip_without_pickle(tmp_path):
    data = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
            "param_groups": [{"params": [0], "betas": (0.9, 0.99), "lr": 1e-4, "name": "unet", "x": None}]}
    tensors = {}
    back = _join(_split(data, tensors, "opt"), tensors)
    assert back["param_groups"] == data["param_groups"] and isinstance(back["param_groups"][0]["betas"], tuple)
    assert torch.equal(back["state"][0]["exp_avg"], torch.ones(2))

    groups = _groups()
    optimizer, _ = build_optimizer("AdamW", groups)
    scheduler = build_scheduler("cosine", optimizer, total_steps=10, warmup_steps=2)
    for p in optimizer.param_groups[0]["params"] + optimizer.param_groups[1]["params"]:
        p.grad = torch.ones_like(p)
    optimizer.step()
    scheduler.step()
    folder = save_state(tmp_path / "x-state", network_tensors={"a.alpha": torch.tensor(4.0)}, optimizer=optimizer,
                        scheduler=scheduler, scaler=None, step=1, epoch=1, info={"seed": 7})
    meta, network = load_state(folder)
    assert meta["step"] == 1 and meta["seed"] == 7 and network["a.alpha"].item() == 4.0
    fresh, _ = build_optimizer("AdamW", _groups())
    fresh.load_state_dict(meta["optimizer"])
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in folder.iterdir())


def test_train_reports_a_missing_package_and_restores_the_model(tmp_path, monkeypatch):
    import importlib
    import types

    from conftest import tiny_model
    from test_train_loop import make_config

    from lora_trainer.train import optimizers, train
    from lora_trainer.train.verify import model_state, state_differences

    def import_module(name):
        if name == "prodigyopt":
            raise ModuleNotFoundError("No module named 'prodigyopt'")
        return importlib.import_module(name)

    monkeypatch.setattr(optimizers, "importlib", types.SimpleNamespace(import_module=import_module))
    model = tiny_model("sd1")
    before = model_state(model)
    result = train(model, make_config(tmp_path, "sd1", steps=2, optimizer="Prodigy", unet_lr=1.0,
                                     text_encoder_lr=1.0))  # Prodigy: one lr for every part
    assert result.status == "error" and "'prodigyopt'" in result.message and "pip install" in result.message
    assert state_differences(before, model_state(model)) == []
