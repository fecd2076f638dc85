"""`train()`: the architecture-agnostic loop over a model already in memory, with the restore contract.

Steps are optimizer steps (kohya): `gradient_accumulation_steps` bucket-pure batches each. Step s's random
numbers come from (seed, s), so a resumed run continues exactly where the saved one stopped.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from typing import Callable, Optional

import torch

from ..arch.detect import UnsupportedModel
from ..config import ConfigError
from ..kohya_semantics import for_arch
from .batches import make_batch
from .distributed import LocalProcess
from .errors import Cancelled, TrainError
from .memory import free_memory, is_out_of_memory, oom_advice
from .model_guard import ModelGuard
from .progress import CancelToken, Progress, Speedometer
from .rescue import PreviewGuard, describe, rescue_save
from .result import TrainHooks, TrainResult
from .saving import epoch_file, final_file, save_session_lora, state_dir, step_file
from .session import Session
from .state import save_state
from .step import diffusion_loss, step_seed
from .uncond import zero_dropped_captions

logger = logging.getLogger("lora_trainer.train")


class NonFinite(Exception):
    """The loss or the LoRA weights became NaN/inf; `step` = optimizer steps completed before it happened."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} at step {step + 1}")
        self.step = step


def train(model, config, progress: Optional[Callable[[Progress], None]] = None, cancel: Optional[CancelToken] = None,
          hooks: Optional[TrainHooks] = None, device=None) -> TrainResult:
    """Train a LoRA on `model` (the webui's loaded SD1/SD2/SD2-v/SDXL model) as `config` says. Never raises for
    user-level failures; the model is restored exactly in every case (see model_guard)."""
    hooks = hooks or TrainHooks()
    cancel = cancel or CancelToken()

    def log(text: str) -> None:
        logger.info(text)
        if hooks.on_log is not None:
            try:
                hooks.on_log(text)
            except Exception:  # noqa: BLE001 - a broken log sink must not end (or hide) the run
                logger.exception("on_log hook failed")

    def emit(phase: str, **fields) -> None:
        if progress is not None:
            progress(Progress(phase=phase, **fields))

    from ..arch.adapters import get_adapter

    try:
        config.validate()
        adapter = get_adapter(model)
        config = for_arch(config, adapter.arch)  # kohya's per-architecture rules (kohya_semantics.py)
    except (ConfigError, UnsupportedModel) as exc:
        return TrainResult("error", str(exc))
    guard = ModelGuard(adapter.root_module).snapshot()  # Forge: its engine is no nn.Module
    session = Session(model, config, adapter, device, emit, log, cancel)
    session.previews = PreviewGuard(log)
    session.dist = hooks.distributed or LocalProcess()  # several processes: train/distributed.py
    result = None
    try:
        if config.refuse_if_wont_fit:
            from ..plan.gate import refuse_if_wont_fit

            refuse_if_wont_fit(model, config, session.device, log)
        session.prepare()
        result = _run(session, cancel, hooks, emit, log)
    except (TrainError, ConfigError, UnsupportedModel) as exc:
        result = _failed(session, "error", str(exc), hooks)
    except Cancelled as exc:
        result = _failed(session, "cancelled", str(exc), hooks)
    except KeyboardInterrupt:  # Ctrl+C on the command line: a cancel that keeps what was trained
        result = _failed(session, "cancelled", "Interrupted (Ctrl+C).", hooks)
    except Exception as exc:  # noqa: BLE001 - every failure must end in a restored model and a message
        if is_out_of_memory(exc):
            result = _failed(session, "oom", oom_advice(config, session), hooks)
        elif type(exc).__name__ == "DatasetError":
            result = _failed(session, "error", f"dataset: {exc}", hooks)
        else:
            logger.exception("training failed")
            result = _failed(session, "error", f"{_where(session)}{describe(exc)} (the console has the traceback).",
                             hooks)
    finally:
        session.close()
        changed = guard.restore()
        free_memory()
        if changed and result is not None:
            result.message += (f" Warning: {len(changed)} model weights changed during training (a bug; reload "
                               "the model).")
    if result.status != "completed":
        log(result.message)
    try:
        emit("done", step=result.steps_done, total_steps=getattr(session, "total_steps", 0), message=result.message)
    except Exception:  # noqa: BLE001 - the result is what matters now
        logger.exception("progress callback failed")
    return result


def _where(session: Session) -> str:
    step = getattr(session, "steps_done", None)
    return f"Training failed after step {step}/{session.total_steps}: " if step else ""


def _failed(session: Session, status: str, message: str, hooks: TrainHooks) -> TrainResult:
    """The failure result; after the first optimizer step the LoRA trained so far is saved first."""
    saved, note = rescue_save(session, hooks)
    if getattr(session, "steps_done", session.start_step) > session.start_step:
        message = f"{message.rstrip()} {note}"
    return TrainResult(status, message, files=list(session.files), final_file=saved,
                       steps_done=getattr(session, "steps_done", session.start_step),
                       loss_history=list(getattr(session, "loss_history", [])), dataset_report=session.report,
                       state_dirs=list(session.state_dirs))


def _run(s: Session, cancel: CancelToken, hooks: TrainHooks, emit, log) -> TrainResult:
    try:
        return _train_epochs(s, cancel, hooks, emit, log)
    except NonFinite as exc:
        return _nan(s, exc)


def _train_epochs(s: Session, cancel: CancelToken, hooks: TrainHooks, emit, log) -> TrainResult:
    c = s.config
    s.steps_done = step = s.start_step
    s.loss_history = []
    recent = deque(maxlen=max(1, s.steps_per_epoch))
    speed = Speedometer()
    log(f"training {s.adapter.arch} LoRA: {s.total_steps} steps ({s.epochs} epochs x {s.steps_per_epoch}), "
        f"batch {c.train_batch_size}x{c.gradient_accumulation_steps}, {s.precision.name}, on {s.device}")
    emit("training", step=step, total_steps=s.total_steps, epoch=step // s.steps_per_epoch + 1,
         total_epochs=s.epochs, message="Training")
    ga = c.gradient_accumulation_steps
    for epoch_index in range(step // s.steps_per_epoch, s.epochs):
        batches = s.sampler.epoch_batches(epoch_index)
        groups = [batches[i:i + ga] for i in range(0, len(batches), ga)]
        for local, group in enumerate(groups):
            if epoch_index * s.steps_per_epoch + local < step:
                continue  # resumed mid-epoch: these were trained before the state was saved
            if step >= s.total_steps:
                break
            if cancel.cancelled:
                return _cancelled(s, step, epoch_index, hooks, emit)
            if s.pivotal is not None:
                s.pivotal.before_step(step, s.optimizer, s.scheduler)  # freezes the vectors at pivotal_frac
            loss = _train_step(s, group, step, epoch_index)
            step += 1
            s.steps_done = step
            s.loss_history.append(loss)
            recent.append(loss)
            eta = speed.update(step, s.total_steps)
            emit("training", step=step, total_steps=s.total_steps, epoch=epoch_index + 1, total_epochs=s.epochs,
                 loss=loss, avg_loss=sum(recent) / len(recent), lr=_current_lr(s), it_per_s=speed.it_per_s,
                 eta_s=eta, message=f"Step {step}/{s.total_steps}")
            if c.save_every_n_steps and step % c.save_every_n_steps == 0 and step < s.total_steps:
                _save(s, step_file(s.output_dir, c.output_name, step), step, epoch_index + 1, hooks, emit)
            if c.sample_every_n_steps and step % c.sample_every_n_steps == 0:
                _sample(s, step, epoch_index + 1, hooks)
        epoch = epoch_index + 1
        if step >= s.total_steps and epoch * s.steps_per_epoch > step:
            break  # max_train_steps ended inside this epoch
        if c.save_every_n_epochs and epoch % c.save_every_n_epochs == 0 and epoch < s.epochs:
            _save(s, epoch_file(s.output_dir, c.output_name, epoch), step, epoch, hooks, emit)
        if c.sample_every_n_epochs and epoch % c.sample_every_n_epochs == 0:
            _sample(s, step, epoch, hooks)
    final = _save(s, final_file(s.output_dir, c.output_name), step, s.epochs, hooks, emit)
    message = f"Done: {step} steps. Saved {final}.{s.previews.summary()}"
    return TrainResult("completed", message, files=list(s.files), final_file=final,
                       steps_done=step, loss_history=list(s.loss_history), dataset_report=s.report,
                       state_dirs=list(s.state_dirs))


def _train_step(s: Session, group: list, step: int, epoch_index: int) -> float:
    """Forward/backward over the group's micro-batches, then one optimizer step. Returns the mean loss."""
    c = s.config
    values = []
    for micro, items in s.dist.share(group):  # one process: every micro-batch; rank r of N: r, r+N, ...
        seed = step_seed(c.seed, step, micro)
        rng = random.Random(seed)
        torch.manual_seed(seed)  # LoRA dropout, VAE posterior sample when latents are not cached
        generator = torch.Generator().manual_seed(seed)
        batch = make_batch(items, adapter=s.adapter, options=s.options, epoch=epoch_index + 1, rng=rng,
                           device=s.device, latent_cache=s.latent_cache)
        with s.precision.autocast():
            if s.text_cache is not None:
                text = s.text_cache.encode(batch.captions)
            else:  # pivotal tuning: the new token's vectors substituted as the webui does at inference
                lookup = s.pivotal.lookup if s.pivotal is not None else None
                text = s.adapter.encode_text(batch.captions, c.clip_skip, prompts=s.prompts, embeddings=lookup)
            text = zero_dropped_captions(s.adapter.arch, text, batch.dropped)
        loss = diffusion_loss(s.adapter, batch, text, config=c, alphas_cumprod=s.alphas_cumprod,
                              generator=generator, precision=s.precision)
        value = float(loss.detach())
        if not math.isfinite(value):
            s.optimizer.zero_grad(set_to_none=True)
            raise NonFinite(step, f"loss is {value}")
        scaled = loss / c.gradient_accumulation_steps  # accelerate divides by the configured count, always
        (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
        values.append(value)
    values = s.dist.sync(s.trainable, values)  # all-reduce the LoRA gradients (and losses) across processes
    if s.scaler is not None:
        s.scaler.unscale_(s.optimizer)
    if c.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(s.trainable, c.max_grad_norm)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return sum(values) / len(values)


def _current_lr(s: Session) -> Optional[float]:
    group = s.optimizer.param_groups[-1]  # UNet group when the UNet is trained (kohya puts the TE first)
    lr = group.get("lr")
    if lr is None:
        return None
    return float(lr) * float(group.get("d", 1.0))  # Prodigy / D-Adaptation: the effective step is d·lr


def _save(s: Session, path, step: int, epoch: int, hooks: TrainHooks, emit):
    c = s.config
    if not all(torch.isfinite(p).all() for p in s.network.parameters()):
        raise NonFinite(step - 1, "the LoRA weights became NaN/inf")  # never write a broken file
    emit("saving", step=step, total_steps=s.total_steps, epoch=epoch, total_epochs=s.epochs,
         message=f"Saving {path.name}")
    if not s.dist.is_main:
        return path  # rank 0 writes: every rank holds the same weights
    written = save_session_lora(s, path, step=step, epoch=epoch, model_identity=hooks.model_identity,
                                overwrite=True)  # clashes were refused before training
    s.files.append(written)
    s.saved_step = step
    if s.pivotal is not None and written == final_file(s.output_dir, c.output_name):
        s.pivotal.save_embedding_file(written, step)
    if c.save_state:
        bundle = s.pivotal.bundle() if s.pivotal is not None else {}
        folder = save_state(state_dir(written), network_tensors={**s.network.kohya_state_dict(), **bundle},
                            optimizer=s.optimizer, scheduler=s.scheduler, scaler=s.scaler, step=step, epoch=epoch,
                            info={"seed": c.seed, "output_name": c.output_name, "arch": s.adapter.arch})
        s.state_dirs.append(folder)
    if hooks.on_saved is not None:
        hooks.on_saved(written)
    return written


def _sample(s: Session, step: int, epoch: int, hooks: TrainHooks) -> None:
    """Previews by the caller, with the LoRA attached, the LoRA in eval mode and checkpointing off. A failing
    preview is a warning (PreviewGuard), never the end of the run."""
    if hooks.on_sample is None:
        return
    s.checkpointing.remove()
    s.network.eval()
    try:
        with torch.no_grad():
            extra = {"embedding": s.pivotal.embeddings.embedding} if s.pivotal is not None else {}
            s.previews.run(lambda: hooks.on_sample(step, epoch, s.network, s.adapter, **extra), step)
    finally:
        s.network.train()
        if s.config.gradient_checkpointing:
            s.checkpointing.enable()


def _cancelled(s: Session, step: int, epoch_index: int, hooks: TrainHooks, emit) -> TrainResult:
    c = s.config
    if step <= s.start_step:
        return TrainResult("cancelled", "Cancelled before the first step; nothing was saved.", files=list(s.files),
                           steps_done=step, dataset_report=s.report, state_dirs=list(s.state_dirs))
    path = _save(s, final_file(s.output_dir, c.output_name), step, epoch_index + 1, hooks, emit)
    more = " With the training state saved, set it as 'resume state' to continue." if c.save_state else ""
    return TrainResult("cancelled", f"Cancelled at step {step}/{s.total_steps}; saved what was trained so far to "
                                    f"{path}.{more}", files=list(s.files), final_file=path, steps_done=step,
                       loss_history=list(s.loss_history), dataset_report=s.report, state_dirs=list(s.state_dirs))


def _nan(s: Session, exc: NonFinite) -> TrainResult:
    last = s.files[-1] if s.files else None
    kept = f"The last good save is {last}." if last else "Nothing was saved."
    message = (f"Training stopped: the {exc} (the weights diverged). {kept} Lower the learning rate "
               f"(unet_lr {s.config.unet_lr:g}), keep max_grad_norm at 1, or use bf16 instead of fp16.")
    return TrainResult("nan", message, files=list(s.files), final_file=last, steps_done=exc.step,
                       loss_history=list(s.loss_history), dataset_report=s.report, state_dirs=list(s.state_dirs))
