"""Liveness, metrics and task templates."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bagel_world.server.deps import get_state, require_token
from bagel_world.server.errors import ApiError, clip
from bagel_world.server.schemas import COMMON_ERRORS, Metrics, error_responses
from bagel_world.server.state import ServerState
from bagel_world.simulator.tasks import template_to_json

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=COMMON_ERRORS)


@router.get("/healthz", tags=["health"])
def healthz(request: Request) -> dict:
    """200 once the simulator is loaded; needs no token (for load balancers and probes)."""
    ready = getattr(request.app.state, "server", None) is not None
    return {"status": "ok" if ready else "loading"}


@v1.get("/metrics", tags=["health"])
def metrics(state: ServerState = Depends(get_state)) -> Metrics:
    return Metrics(**state.snapshot())


@v1.get("/limits", tags=["health"])
def limits(request: Request) -> dict:
    """The server's limits, so clients can size their requests (the token is not shown)."""
    s = request.app.state.settings
    return {k: v for k, v in asdict(s).items() if k != "token"} | {"max_sessions_per_client": s.client_quota}


@v1.get("/tasks", tags=["tasks"])
def tasks(state: ServerState = Depends(get_state)) -> dict:
    return {"tasks": {name: template_to_json(t) for name, t in state.tasks().items()}}


@v1.get("/tasks/{task}/scenarios", tags=["tasks"], response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}},
                         "description": "the checkpoint's scenario set for the task, as .npz"},
                    **error_responses(404)})
def scenarios(task: str, state: ServerState = Depends(get_state)) -> Response:
    """The start scenes the server's envs draw from, so remote envs reset to the same frames.

    404 when the checkpoint ships none for the task: both sides then draw the same
    procedural scenes.
    """
    if task not in state.tasks():
        raise ApiError(404, "unknown_task", f"unknown task {clip(task)}; this server has {sorted(state.tasks())}")
    shipped = state.simulator.shipped_scenarios(task)  # a file read: fine on this threadpool route
    if shipped is None:
        raise ApiError(404, "no_scenarios", f"the checkpoint ships no scenario set for task {clip(task)}")
    return Response(shipped.to_bytes(), media_type="application/octet-stream")
