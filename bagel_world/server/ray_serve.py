"""The simulator server on Ray Serve: N simulator replicas behind one router, the same /v1 API.

    bagel-world serve --ray --replicas 2                     # CLI: Ray, Serve and the app
    serve run bagel_world.server.ray_serve:app_builder replicas=2 checkpoint=PATH   # own Serve config

Each replica is the ordinary FastAPI app (`create_app`) over its own simulator and dynamic
batcher, so token, Host, body, text and quota rules are the ones a single server applies.

Session affinity, and why it is done this way: a session's KV cache lives in one process and
cannot move. Serve spreads the requests of one deployment over its replicas by load and has no
sticky routing (model multiplexing only prefers a replica that already holds a model id, and
falls back to others), so each simulator is a deployment of its own, `sim-0` ... `sim-{N-1}`,
with one replica. Every session and episode id carries its simulator's index and incarnation
(`sess-r1.5f0c2d1e.<hex>`); the router (`Router`, the HTTP ingress) reads it from the path or
from the body of a multi-session call and sends the request to that deployment's handle. A fork
is made by the parent's replica, so it carries the same address. Requests that name no id (new
sessions, tasks, health) go round-robin to replicas that answered their last probe.

Faults: when a replica dies, Serve starts a new one with a new incarnation. A request for a
session of the dead one gets 503 `replica_unavailable` while it is down and 410 `session_lost`
once the new one is up (it does not have the session); both name the session. Sessions on other
replicas are not affected, and new sessions go to live replicas.

Limits are per replica: with N replicas the cluster holds N x `max_sessions`, and a client's
quota applies on each replica. The request-body timeout is Serve's proxy's (its
`request_timeout_s`); the body size limit is checked by the router before a request is forwarded.

On GPUs: one replica per GPU (`ray_actor_options={"num_gpus": 1}`, what `--device cuda` sets).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bagel_world.server.errors import clean_message, clip
from bagel_world.server.settings import ServerSettings

log = logging.getLogger(__name__)

APP_NAME = "bagel-world"
REPLICA_HEADER = "x-bagel-replica"  # on every answer: the index of the simulator replica that made it
# sess-r<index>.<incarnation>.<hex>: the address part that `SimulatorReplica` puts into its ids
ID_ADDRESS = re.compile(r"^(sess|ep)-r(\d{1,4})\.([0-9a-f]{8})\.")
_MULTI_SESSION_PATHS = ("/v1/sessions/step", "/v1/score")  # bodies naming several sessions


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> dict:
    """A forwarded-response dict carrying the server's error format."""
    body = json.dumps({"error": {"code": code, "message": clean_message(message)}}).encode()
    hdrs = [(b"content-type", b"application/json"), *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    return {"status": status, "headers": hdrs, "body": body}


def parse_address(cid: str) -> tuple[str, int, str] | None:
    """(kind, replica index, incarnation) of a replica-made id, or None for any other text."""
    m = ID_ADDRESS.match(cid)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def _kind(cid: str) -> str:
    return "episode" if cid.startswith("ep-") else "session"


@dataclass
class ModelFactory:
    """The default simulator factory of a replica (picklable: Ray ships it to the replica)."""

    checkpoint: str | None = None
    device: str | None = None
    torch_threads: int | None = None

    def __call__(self):
        from bagel_world.simulator import make_simulator

        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        return make_simulator(checkpoint=self.checkpoint, device=self.device)


class SimulatorReplica:
    """One simulator and its batcher: the plain server app, driven in-process through ASGI."""

    async def __init__(self, index: int, factory: Callable[[], Any], settings: ServerSettings):
        from bagel_world.server.app import create_app

        self.index, self.incarnation = index, secrets.token_hex(4)
        self.app = create_app(factory, settings, id_tag=f"r{index}.{self.incarnation}.")
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # loads the model; Serve marks the replica ready after
        log.info("simulator replica %d (incarnation %s) is up in pid %d", index, self.incarnation, os.getpid())

    async def info(self) -> dict:
        return {"index": self.index, "incarnation": self.incarnation, "pid": os.getpid()}

    async def forward(self, request: dict) -> dict:
        """Run one HTTP request through the app: `request` has method, path, query, headers,
        body, client, server and ids (the session and episode ids it names)."""
        for cid in request["ids"]:
            addr = parse_address(cid)
            if addr is not None and addr[1] == self.index and addr[2] != self.incarnation:
                kind = _kind(cid)
                return _json_error(410, f"{kind}_lost", f"{kind} {clip(cid)} was held by simulator replica "
                                   f"{self.index}, which has restarted since; its state is lost: open a new one")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": request["scheme"],
            "method": request["method"], "path": request["path"], "raw_path": request["path"].encode(),
            "root_path": "", "query_string": request["query"], "headers": request["headers"],
            "client": tuple(request["client"]) if request["client"] else None,
            "server": tuple(request["server"]) if request["server"] else None,
        }
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": request["body"], "more_body": False}
            await asyncio.Event().wait()  # the app never waits for a disconnect here
            return {"type": "http.disconnect"}

        out: dict = {"status": 500, "headers": [], "body": b""}
        chunks: list[bytes] = []

        async def send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                out["status"], out["headers"] = msg["status"], list(msg.get("headers", []))
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        await self.app(scope, receive, send)
        out["body"] = b"".join(chunks)
        return out

    async def __del__(self):  # Serve calls it when it stops the replica: close sessions, free the model
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)


class Router:
    """The HTTP ingress: sends each request to the simulator replica its ids name."""

    def __init__(self, replicas: list, settings: ServerSettings, probe_s: float = 1.0, request_timeout_s: float = 600.0):
        self.replicas, self.settings = list(replicas), settings
        self.probe_s, self.request_timeout_s = probe_s, request_timeout_s
        self.live = [True] * len(self.replicas)  # answered the last probe (or not yet probed)
        self._turn = itertools.count()
        self._prober: asyncio.Task | None = None

    # ---- replica health ---------------------------------------------------------------------
    async def _probe_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(k) for k in range(len(self.replicas))))
            await asyncio.sleep(self.probe_s)

    async def _probe(self, k: int) -> None:
        try:
            await asyncio.wait_for(self.replicas[k].info.remote(), timeout=max(1.0, 2 * self.probe_s))
            self.live[k] = True
        except Exception:  # dead, restarting (Serve queues the call until a new replica is up) or stuck
            if self.live[k]:
                log.warning("simulator replica %d does not answer; new sessions go to the others", k)
            self.live[k] = False

    def _next_live(self, skip: set[int]) -> int | None:
        n = len(self.replicas)
        for _ in range(n):
            k = next(self._turn) % n
            if self.live[k] and k not in skip:
                return k
        return None

    # ---- forwarding ---------------------------------------------------------------------------
    async def _call(self, k: int, req: dict, ids: list[str]) -> dict:
        """Forward to replica k; a dead or restarting replica gives 503 naming the session."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        names = f"{_kind(ids[0])} {clip(ids[0])}" if ids else "this request"
        if ids and not self.live[k]:
            return _json_error(503, "replica_unavailable", f"simulator replica {k}, which holds {names}, is down or "
                               f"restarting; the sessions it held are lost", {"Retry-After": "1"})
        try:
            out = await asyncio.wait_for(self.replicas[k].forward.remote({**req, "ids": ids}),
                                         timeout=self.request_timeout_s)
        except (RayActorError, ActorUnavailableError, asyncio.TimeoutError) as exc:
            self.live[k] = False
            log.warning("simulator replica %d failed on %s %s: %s", k, req["method"], req["path"], type(exc).__name__)
            return _json_error(503, "replica_unavailable", f"simulator replica {k}, which served {names}, died or did "
                               f"not answer ({type(exc).__name__}); the sessions it held are lost", {"Retry-After": "1"})
        out["headers"] = [*out["headers"], (REPLICA_HEADER.encode(), str(k).encode())]
        return out

    async def _any(self, req: dict) -> dict:
        """A request that names no session: a live replica, the next one if it fails."""
        tried: set[int] = set()
        while (k := self._next_live(tried)) is not None:
            tried.add(k)
            out = await self._call(k, req, [])
            if out["status"] != 503 or b"replica_unavailable" not in out["body"]:
                return out
        return _json_error(503, "no_replica", f"none of the {len(self.replicas)} simulator replicas is up",
                           {"Retry-After": "1"})

    def _home(self, cid: str) -> int | None:
        addr = parse_address(cid)
        return addr[1] if addr is not None and addr[1] < len(self.replicas) else None

    async def _multi(self, req: dict, body: dict, ids: list[str]) -> dict:
        """A step or score call over sessions of several replicas: one sub-call per replica,
        concurrently; the answers are put back in the order of the request."""
        groups: dict[int, list[int]] = {}
        for i, cid in enumerate(ids):
            groups.setdefault(self._home(cid) or 0, []).append(i)
        aligned = [k for k in ("session_ids", "actions", "seeds", "goals") if isinstance(body.get(k), list)]

        def part(idx: list[int]) -> dict:
            sub = {**body, **{k: [body[k][i] for i in idx] for k in aligned}}
            return {**req, "body": json.dumps(sub).encode()}

        outs = await asyncio.gather(*(self._call(k, part(idx), [ids[i] for i in idx]) for k, idx in groups.items()))
        for out in outs:
            if out["status"] != 200:
                return out  # it names the session; the parts on other replicas have run
        key = "outputs" if req["path"] == "/v1/sessions/step" else "logprobs"
        merged: list = [None] * len(ids)
        for idx, out in zip(groups.values(), outs):
            for i, item in zip(idx, json.loads(out["body"])[key]):
                merged[i] = item
        served = ",".join(str(k) for k in groups)
        return {"status": 200, "body": json.dumps({key: merged}).encode(),
                "headers": [(b"content-type", b"application/json"), (REPLICA_HEADER.encode(), served.encode())]}

    async def route(self, req: dict) -> dict:
        parts = req["path"].split("/")
        # /v1/sessions/{id}/... and /v1/episodes/{id}/... ; /v1/sessions/step is not an id
        if len(parts) >= 4 and parts[1] == "v1" and parts[2] in ("sessions", "episodes") and \
                req["path"] != "/v1/sessions/step":
            cid = parts[3]
            k = self._home(cid)
            return await (self._call(k, req, [cid]) if k is not None else self._any(req))
        if req["method"] == "POST" and req["path"] in _MULTI_SESSION_PATHS:
            try:
                body = json.loads(req["body"])
                ids = body.get("session_ids") if isinstance(body, dict) else None
            except ValueError:
                ids = None
            if isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids):
                homes = {self._home(cid) for cid in ids} - {None}
                if len(homes) == 1:
                    return await self._call(homes.pop(), req, ids)
                if len(homes) > 1:
                    return await self._multi(req, body, ids)
        return await self._any(req)  # names no replica's id: the replica's own checks answer

    async def __call__(self, request):
        from starlette.responses import Response

        if self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_forever())
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.settings.max_body_bytes):
            out = _json_error(413, "body_too_large", f"request body exceeds the server's limit of "
                                                     f"{self.settings.max_body_bytes} bytes")
        else:
            body = await request.body()
            if len(body) > self.settings.max_body_bytes:
                out = _json_error(413, "body_too_large", f"request body exceeds the server's limit of "
                                                         f"{self.settings.max_body_bytes} bytes")
            else:
                scope = request.scope
                out = await self.route({
                    "method": request.method, "path": scope["path"], "query": scope.get("query_string", b""),
                    "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                    + [(b"content-length", str(len(body)).encode())],
                    "body": body, "scheme": scope.get("scheme", "http"), "client": scope.get("client"),
                    "server": scope.get("server"),
                })
        headers = [(k, v) for k, v in out["headers"] if k.lower() not in (b"content-length", b"transfer-encoding")]
        resp = Response(content=out["body"], status_code=out["status"])
        resp.raw_headers = [*headers, (b"content-length", str(len(out["body"])).encode())]
        return resp


def build_app(factory: Callable[[], Any], settings: ServerSettings | None = None, replicas: int = 1,
              ray_actor_options: dict | None = None, health_check_period_s: float = 2.0, probe_s: float = 1.0):
    """The Serve application: `replicas` simulator deployments (one replica each) and the router.

    `factory` builds a replica's simulator (it is pickled to the replica); `ray_actor_options`
    apply to each simulator replica, e.g. {"num_gpus": 1} for one replica per GPU.
    """
    _, serve = _import_ray()
    settings = settings or ServerSettings()
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas!r}")
    # Enough concurrent requests per replica for its batcher to gather a full batch of sessions.
    sim = serve.deployment(SimulatorReplica, max_ongoing_requests=max(64, 2 * settings.max_sessions),
                           health_check_period_s=health_check_period_s, health_check_timeout_s=60)
    router = serve.deployment(Router, max_ongoing_requests=max(1024, 4 * replicas * settings.max_sessions),
                              ray_actor_options={"num_cpus": 0})
    handles = [sim.options(name=f"sim-{k}", ray_actor_options=dict(ray_actor_options or {"num_cpus": 1}))
               .bind(k, factory, settings) for k in range(replicas)]
    return router.options(name="router").bind(handles, settings, probe_s)


def _import_ray():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise RuntimeError(f"serving on Ray needs the [ray] extra: pip install 'bagel-world[ray]' ({exc})") from None
    return ray, serve


def app_builder(args: dict):
    """For `serve run bagel_world.server.ray_serve:app_builder replicas=2 checkpoint=PATH device=cuda`
    or a Serve config file's `import_path`. Other keys are ServerSettings limits (max_sessions=64);
    the token is `token=` or BAGEL_WORLD_TOKEN. Each simulator replica takes one GPU on cuda."""
    from dataclasses import fields

    from bagel_world.server.settings import limit_parser

    args = dict(args)
    replicas = int(args.pop("replicas", 1))
    factory = ModelFactory(args.pop("checkpoint", None), args.pop("device", None))
    token = args.pop("token", None) or os.environ.get("BAGEL_WORLD_TOKEN") or None
    hosts = tuple(h for h in str(args.pop("allowed_hosts", "")).split(",") if h.strip())
    kinds = {f.name: str(f.type) for f in fields(ServerSettings) if f.name not in ("token", "allowed_hosts")}
    unknown = sorted(set(args) - set(kinds))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; accepted: replicas, checkpoint, device, token, "
                         f"allowed_hosts, {', '.join(sorted(kinds))}")
    limits = {name: limit_parser(kinds[name])(str(value)) for name, value in args.items()}
    gpu = (factory.device or "").startswith("cuda")
    options = {"num_cpus": 1, "num_gpus": 1} if gpu else {"num_cpus": 1}
    return build_app(factory, ServerSettings(token=token, allowed_hosts=hosts, **limits), replicas,
                     ray_actor_options=options)


def serve_ray(checkpoint=None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, device=None,
              replicas: int = 2, **limits) -> None:
    """`bagel-world serve --ray`: start a local Ray instance (or join RAY_ADDRESS), run the app
    on Serve's HTTP proxy at host:port, and block until interrupted. Without --device, replicas
    take a GPU each when the cluster has one per replica."""
    from bagel_world.server.settings import is_loopback

    ray, serve = _import_ray()
    token = token or os.environ.get("BAGEL_WORLD_TOKEN") or None
    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to serve on non-loopback address {host!r} without a token: pass --token "
                         f"(or set BAGEL_WORLD_TOKEN), or bind 127.0.0.1")
    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    settings = ServerSettings(token=token, **limits)
    ray.init(ignore_reinit_error=True, include_dashboard=False)
    have = ray.cluster_resources()
    gpu = (device or "").startswith("cuda") or (device is None and have.get("GPU", 0) >= replicas)
    options = {"num_cpus": 1, "num_gpus": 1} if gpu else {"num_cpus": 1}
    need = {"CPU": replicas, **({"GPU": replicas} if gpu else {})}
    short = {k: have.get(k, 0) for k, v in need.items() if have.get(k, 0) < v}
    if short:
        ray.shutdown()
        raise ValueError(f"--replicas {replicas} needs {need} of the Ray cluster, which has {short}: ask for "
                         f"fewer replicas or add nodes")
    # A CPU replica's torch threads: the cores shared out, so replicas do not stall each other.
    threads = None if gpu else max(1, int(have.get("CPU", 1)) // replicas)
    factory = ModelFactory(checkpoint, device or ("cuda" if gpu else "cpu"), threads)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(factory, settings, replicas, ray_actor_options=options), name=APP_NAME, route_prefix="/")
    print(f"serving {replicas} simulator replicas on Ray Serve at http://{host}:{port} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
