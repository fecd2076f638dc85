"""`refuse_if_wont_fit`: before anything is prepared (so before the first step), plan the run and stop it with
the plan's advice when it cannot fit. Only when the user ticked it; an error inside the planner never blocks."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def refuse_if_wont_fit(model, config, device, log) -> None:
    from ..train.errors import TrainError
    from .estimate import plan_for_model

    try:
        plan = plan_for_model(model, config, device=device)
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop a run that might fit
        logger.exception("memory plan failed")
        log(f"memory plan: could not estimate ({type(exc).__name__}: {exc}); training anyway")
        return
    log(plan.summary())
    if plan.fits is False:
        raise TrainError(f"refuse_if_wont_fit: {plan.summary()}. Nothing was trained; change a setting or untick "
                         "'Refuse when the plan says it won't fit'.")
