"""Issue 11 item 6: kohya's v-prediction loss options and zero terminal SNR, on known values."""

from __future__ import annotations

import math

import torch
from conftest import tiny_model

from lora_trainer.arch.adapters import get_adapter
from lora_trainer.train import loss_weights, losses


def _sd_schedule():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return betas, torch.cumprod(1 - betas, 0)


def test_zero_terminal_snr_matches_the_papers_algorithm_on_betas():
    betas, acp = _sd_schedule()
    # arXiv 2305.08891 Algorithm 1 (what kohya runs on the scheduler's betas), then ᾱ from the new betas
    root = (1 - betas).cumprod(0).sqrt()
    r0, rt = root[0].clone(), root[-1].clone()
    root = (root - rt) * r0 / (r0 - rt)
    bar = root**2
    new_betas = 1 - torch.cat([bar[0:1], bar[1:] / bar[:-1]])
    expected = torch.cumprod(1 - new_betas, 0)
    got = loss_weights.rescale_zero_terminal_snr(acp.float())
    assert got.dtype == torch.float32 and float(got[-1]) == 0.0
    torch.testing.assert_close(got.double(), expected, atol=1e-7, rtol=1e-6)
    assert float(got[0]) == float(acp.float()[0])


def test_kohya_weights_on_known_values():
    acp = torch.tensor([0.5, 0.2, 1 / 1001, 0.9999999], dtype=torch.float32)  # SNR 1, 0.25, 0.001, ~1e7 -> 1000
    t = torch.arange(4)
    snr = torch.tensor([1.0, 0.25, 0.001, 1000.0])
    loss = torch.tensor([2.0, 2.0, 2.0, 2.0])
    scale = snr / (snr + 1)
    torch.testing.assert_close(loss_weights.v_pred_scale(t, acp), scale, rtol=1e-4, atol=0)
    out = loss_weights.apply(loss, t, acp, prediction_type="v", scale_v_pred_loss_like_noise_pred=True)
    torch.testing.assert_close(out, loss * scale, rtol=1e-4, atol=0)
    out = loss_weights.apply(loss, t, acp, prediction_type="epsilon", v_pred_like_loss=0.5)
    torch.testing.assert_close(out, loss + loss / scale * 0.5, rtol=1e-4, atol=0)
    out = loss_weights.apply(loss, t, acp, prediction_type="epsilon", debiased_estimation_loss=True)
    torch.testing.assert_close(out, loss / snr.sqrt(), rtol=1e-4, atol=0)
    out = loss_weights.apply(loss, t, acp, prediction_type="v", debiased_estimation_loss=True)
    torch.testing.assert_close(out, loss / (snr + 1), rtol=1e-4, atol=0)
    assert torch.equal(loss_weights.apply(loss, t, acp, prediction_type="v"), loss)  # all off: unchanged


def test_batch_loss_applies_them_after_min_snr_in_kohyas_order():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    _, acp = _sd_schedule()
    acp = acp.float()
    t = torch.tensor([100, 900])
    base = ((pred - target) ** 2).mean(dim=(1, 2, 3)) * torch.tensor([1.0, 0.5])
    snr = acp[t] / (1 - acp[t])
    expected = base * torch.clamp(snr, max=5.0) / (snr + 1)
    expected = expected * (snr / (snr + 1))
    expected = expected / (snr + 1)
    got = losses.batch_loss(pred, target, t, acp, prediction_type="v", loss_weights=torch.tensor([1.0, 0.5]),
                            min_snr_gamma=5.0, scale_v_pred_loss_like_noise_pred=True,
                            debiased_estimation_loss=True)
    assert math.isclose(float(got), float(expected.mean()), rel_tol=1e-5)


def test_the_session_trains_on_the_rescaled_schedule_only_when_asked():
    from lora_trainer.config import TrainConfig

    adapter = get_adapter(tiny_model("sd2v"))
    plain = loss_weights.training_alphas_cumprod(adapter, TrainConfig(), "cpu")
    torch.testing.assert_close(plain, adapter.alphas_cumprod("cpu"))
    rescaled = loss_weights.training_alphas_cumprod(adapter, TrainConfig(zero_terminal_snr=True), "cpu")
    assert float(rescaled[-1]) == 0.0 and float(plain[-1]) > 0


KOHYA_SCRIPT = """
import json, sys, types
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from lora_trainer.testing.torchvision_compat import ensure_torchvision_importable
ensure_torchvision_importable()
sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # library.utils imports it; these functions never use it
import torch
from diffusers import DDPMScheduler
from library import custom_train_functions as ctf
s = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
out = {"acp": s.alphas_cumprod.tolist()}
t = torch.tensor([0, 10, 300, 700, 999])
loss = torch.ones(5)
ctf.prepare_scheduler_for_custom_training(s, "cpu")
for v in (False, True):
    out[f"snr{v}"] = ctf.apply_snr_weight(loss, t, s, 5.0, v).tolist()
    out[f"debiased{v}"] = ctf.apply_debiased_estimation(loss, t, s, v).tolist()
out["scale"] = ctf.scale_v_prediction_loss_like_noise_prediction(loss, t, s).tolist()
out["vlike"] = ctf.add_v_prediction_like_loss(loss, t, s, 0.3).tolist()
z = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
ctf.fix_noise_scheduler_betas_for_zero_terminal_snr(z)
out["ztsnr"] = z.alphas_cumprod.tolist()
print(json.dumps(out))
"""


def test_formulas_match_sd_scripts(tmp_path):
    """With SD_SCRIPTS_DIR: min-SNR, debiased, v-pred scale, v-pred-like loss and zero terminal SNR equal kohya's own
    functions on a diffusers scheduler with SD's schedule."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    scripts = os.environ.get("SD_SCRIPTS_DIR", "")
    if not scripts or not (Path(scripts) / "library" / "custom_train_functions.py").is_file():
        pytest.skip("set SD_SCRIPTS_DIR to a kohya sd-scripts checkout")
    script = tmp_path / "kohya.py"
    script.write_text(KOHYA_SCRIPT, encoding="utf-8")
    run = subprocess.run([sys.executable, str(script), scripts, str(Path(__file__).resolve().parents[1])],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = {k: torch.tensor(v) for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    acp = theirs["acp"].float()
    t = torch.tensor([0, 10, 300, 700, 999])
    loss = torch.ones(5)
    for v in (False, True):
        kind = "v" if v else "epsilon"
        torch.testing.assert_close(losses.min_snr_weight(t, acp, 5.0, kind), theirs[f"snr{v}"], rtol=1e-5, atol=0)
        torch.testing.assert_close(loss_weights.apply(loss, t, acp, prediction_type=kind,
                                                      debiased_estimation_loss=True), theirs[f"debiased{v}"],
                                   rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_weights.apply(loss, t, acp, prediction_type="v",
                                                  scale_v_pred_loss_like_noise_pred=True), theirs["scale"],
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_weights.apply(loss, t, acp, prediction_type="epsilon", v_pred_like_loss=0.3),
                               theirs["vlike"], rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_weights.rescale_zero_terminal_snr(acp), theirs["ztsnr"].float(),
                               rtol=1e-5, atol=1e-7)
