"""HTTP routes: start a training job (the TrainConfig as JSON), read its status, cancel it, check a dataset.

Pydantic v1 models (the webui pins fastapi 0.94). Routes an extension adds to the webui's app get no
`--api-auth` from the webui, so `basic_auth` re-implements the webui's own check (HTTP Basic against the
`user:pass,user2:pass2` list) and is attached to every route here.
"""

from __future__ import annotations

from secrets import compare_digest
from typing import Any, Callable, Dict, List, Optional

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.ui.job import JobRunner
from lora_trainer.ui.preflight import JobRefused

PREFIX = "/train-lora/v1"


class StartRequest(BaseModel):
    config: Dict[str, Any] = Field(..., description="TrainConfig options (docs/OPTIONS.md); missing ones default")
    recipe: Optional[str] = Field(None, description="a recipe name (README 'Recipes'); `config` options win")


class StartResponse(BaseModel):
    job_id: str
    task_id: str
    state: str
    message: str
    model: str = ""
    arch: str = ""
    output_file: str = ""


class StatusResponse(BaseModel):
    job_id: Optional[str] = None
    state: str = Field(..., description="idle | queued | running | completed | cancelled | nan | oom | error")
    message: str = ""
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: Optional[float] = None
    avg_loss: Optional[float] = None
    lr: Optional[float] = None
    it_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    files: List[str] = []
    final_file: str = ""
    previews: List[str] = []
    model: str = ""
    arch: str = ""
    output_name: str = ""
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    log: List[str] = Field([], description="the newest log lines (at most `log_lines`)")


class CancelResponse(BaseModel):
    cancelled: bool
    message: str


class DatasetCheckRequest(BaseModel):
    config: Dict[str, Any] = Field(..., description="at least train_dir; bucketing/batch options refine the report")


class ErrorDetail(BaseModel):
    field: str = ""
    message: str


def parse_api_auth(api_auth: Optional[str]) -> Optional[Dict[str, str]]:
    """'user:pass,user2:pass2' -> {user: pass}, as the webui's Api does (None/empty: no auth)."""
    if not api_auth:
        return None
    credentials = {}
    for item in api_auth.split(","):
        user, _, password = item.strip().partition(":")
        credentials[user] = password
    return credentials


def basic_auth(get_credentials: Callable[[], Optional[Dict[str, str]]]):
    """A FastAPI dependency: open when no credentials are configured, else the webui's 401 on a mismatch."""
    http_basic = HTTPBasic(auto_error=False)

    def check(credentials: Optional[HTTPBasicCredentials] = Depends(http_basic)) -> bool:
        allowed = get_credentials()
        if not allowed:
            return True
        if credentials is not None and credentials.username in allowed:
            if compare_digest(credentials.password, allowed[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return check


def config_from_json(data: Dict[str, Any], default_output_dir: str, recipe: Optional[str] = None) -> TrainConfig:
    from lora_trainer.recipes import apply_recipe

    data = apply_recipe(data, recipe)
    if not data.get("output_dir"):
        data["output_dir"] = default_output_dir
    return TrainConfig.from_dict(data).validate()


def _refuse(status_code: int, message: str, field: str = "") -> HTTPException:
    return HTTPException(status_code=status_code, detail=ErrorDetail(field=field, message=message).dict())


def status_response(snapshot: Dict[str, Any], log_lines: int = 50) -> StatusResponse:
    data = {k: v for k, v in snapshot.items() if k in StatusResponse.__fields__}
    data["log"] = list(snapshot.get("log") or [])[-log_lines:] if log_lines > 0 else []
    return StatusResponse(**data)


def register_routes(app, runner: JobRunner, prefix: str = PREFIX) -> None:
    """Add the routes to a FastAPI app (the webui's, or a bare one in tests)."""
    host = runner.host
    auth = [Depends(basic_auth(host.api_credentials))]

    def start(request: StartRequest) -> StartResponse:
        try:
            config = config_from_json(request.config, host.default_output_dir(), request.recipe)
            job = runner.start(config)
        except ConfigError as exc:
            raise _refuse(422, str(exc), exc.field) from exc
        except JobRefused as exc:
            raise _refuse(exc.status_code, exc.message, exc.field) from exc
        from lora_trainer.ui.preflight import output_file

        return StartResponse(job_id=job.id, task_id=job.task_id, state=job.state, message=job.message,
                             model=job.model_title, arch=job.arch, output_file=str(output_file(config)))

    def status(log_lines: int = 50) -> StatusResponse:
        return status_response(runner.status(), log_lines)

    def cancel() -> CancelResponse:
        if runner.cancel():
            return CancelResponse(cancelled=True, message="Cancelling: the job stops after the current step.")
        return CancelResponse(cancelled=False, message="No training job is running.")

    def check_dataset(request: DatasetCheckRequest) -> Dict[str, Any]:
        from lora_trainer.ui.dataset_check import check_dataset as run_check

        try:
            config = config_from_json(request.config, host.default_output_dir())
        except ConfigError as exc:
            raise _refuse(422, str(exc), exc.field) from exc
        return run_check(config, runner.host).to_dict()

    app.add_api_route(f"{prefix}/start", start, methods=["POST"], response_model=StartResponse, dependencies=auth,
                      responses={409: {"model": ErrorDetail}, 422: {"model": ErrorDetail}})
    app.add_api_route(f"{prefix}/status", status, methods=["GET"], response_model=StatusResponse, dependencies=auth)
    app.add_api_route(f"{prefix}/cancel", cancel, methods=["POST"], response_model=CancelResponse,
                      dependencies=auth)
    app.add_api_route(f"{prefix}/check-dataset", check_dataset, methods=["POST"], dependencies=auth)

    def plan(request: DatasetCheckRequest) -> Dict[str, Any]:  # the same body: {"config": {...}}
        from lora_trainer.ui.plan_view import plan_dict

        data = dict(request.config)
        data["train_dir"] = data.get("train_dir") or "(not needed to plan)"
        try:
            config = config_from_json(data, host.default_output_dir())
        except ConfigError as exc:
            raise _refuse(422, str(exc), exc.field) from exc
        return plan_dict(config, host)

    app.add_api_route(f"{prefix}/plan", plan, methods=["POST"], dependencies=auth)
