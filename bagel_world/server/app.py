"""The FastAPI app: `create_app` wires routers, limits and the simulator; `serve` runs it.

The simulator is built once in the lifespan (loading a model takes a while) and reached
by the routers through `Depends(get_state)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from bagel_world.server import routes_envs, routes_health, routes_sessions
from bagel_world.server.errors import body_too_large, body_too_slow, install_error_handlers
from bagel_world.server.settings import ServerSettings, serving_token
from bagel_world.server.state import ServerState
from bagel_world.simulator.base import Simulator

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_VERSION = "v1"


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes`, by Content-Length or as they stream in;
    408 for bodies not complete within `timeout_s` (a stalled client must not hold a
    connection and its buffer forever).

    Pure ASGI so it runs before any parsing; the body is buffered (it is small by then)
    and replayed to the app.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def _too_slow(self, scope, receive, send) -> None:
        await body_too_slow(self.timeout_s).response()(scope, receive, send)

    async def _too_large(self, scope, receive, send) -> None:
        await body_too_large(self.max_bytes).response()(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        chunks, total = [], 0
        deadline = time.monotonic() + self.timeout_s  # for the whole body: a trickle must not reset it
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return await self._too_slow(scope, receive, send)
            if msg["type"] != "http.request":  # client went away
                return
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def create_app(simulator: Simulator | Callable[[], Simulator], settings: ServerSettings | None = None,
               id_tag: str = "") -> FastAPI:
    """The server app over a simulator, or over a factory called once at startup.

    `id_tag` goes into every session and episode id after its kind (`sess-<id_tag><hex>`): a
    Ray Serve replica puts its address there (bagel_world.server.ray_serve)."""
    settings = settings or ServerSettings()
    if not isinstance(simulator, Simulator) and not callable(simulator):
        raise TypeError(f"create_app needs a Simulator or a zero-argument factory, got {type(simulator).__name__}")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # 1. The heavy object, once. A factory may load a model for minutes: off the loop.
        if isinstance(simulator, Simulator):
            sim, owns = simulator, False
        else:
            sim, owns = await run_in_threadpool(simulator), True
            if not isinstance(sim, Simulator):
                raise TypeError(f"the simulator factory returned {type(sim).__name__}, not a Simulator")
        # 2. Worker thread, batcher and idle sweeper; then serve.
        state = ServerState(sim, settings, owns_simulator=owns, id_tag=id_tag)
        await state.start()
        app.state.server = state
        log.info("serving %s with tasks %s", type(sim).__name__, sorted(state.tasks()))
        try:
            yield
        finally:
            app.state.server = None
            await state.stop()

    app = FastAPI(
        title="bagel-world simulator",
        version="1",
        description="BAGEL world-model sessions and Gymnasium env episodes over HTTP. Frames are PNG.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.server = None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.include_router(routes_health.router)
    app.include_router(routes_health.v1)
    app.include_router(routes_sessions.router)
    app.include_router(routes_envs.router)
    app.mount("/playground", StaticFiles(directory=STATIC_DIR, html=True), name="playground")

    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/playground/")

    app.openapi = lambda: _openapi_with_tasks(app)
    return app


def _openapi_with_tasks(app: FastAPI) -> dict:
    """FastAPI's schema, plus what only the loaded simulator knows: the task names (an enum on
    every `task` field and path parameter) and the env ids, so a generated client learns them.
    Cached once the simulator is up; before that, the plain schema."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    state = app.state.server
    if state is None:
        return schema
    tasks = sorted(state.tasks())
    schema["components"]["schemas"]["OpenSession"]["properties"]["task"]["enum"] = tasks
    for ops in schema["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] == "task":
                    p["schema"]["enum"] = tasks
                elif p["in"] == "path" and p["name"] == "env_id":
                    p["schema"]["enum"] = sorted(routes_envs.catalogue(state))
    app.openapi_schema = schema
    return schema


@dataclass
class ModelFactory:
    """The simulator a server loads at startup (picklable: Ray ships it to its replicas)."""

    checkpoint: str | None = None
    device: str | None = None
    torch_threads: int | None = None  # torch.set_num_threads before loading (CPU replicas sharing cores)

    def __call__(self) -> Simulator:
        from bagel_world.simulator import make_simulator

        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        return make_simulator(checkpoint=self.checkpoint, device=self.device)


def serve(checkpoint=None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          device=None, log_level: str = "info", **limits) -> None:
    """Load the simulator from `checkpoint` and serve it until interrupted (blocking).

    `limits` are `ServerSettings` fields (max_sessions=..., session_ttl_s=...). A token is
    required to bind anything but loopback; it may also come from BAGEL_WORLD_TOKEN.
    """
    import uvicorn

    settings = ServerSettings(token=serving_token(token, host), **limits)
    factory = ModelFactory(checkpoint, device)
    app = create_app(factory, settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
