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
session of the dead one gets 503 `replica_unavailable` while the router knows it is down (the
replica died under a request, or missed 3 probes in a row), and 410 `session_lost` once the new
one is up (the router has seen the old incarnation, so the id is not just unknown: that is 404);
both name the session. Sessions on other replicas are not affected, and new sessions go to live
replicas.

Limits are per replica: with N replicas the cluster holds N x `max_sessions`, and a client's
quota applies on each replica; /v1/metrics and /v1/limits describe the replica named in the
answer's X-Bagel-Replica header. The router applies the body size and body time limits itself
before it forwards a request.

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
from typing import Any

from bagel_world.server.app import ModelFactory, create_app
from bagel_world.server.errors import ApiError, body_too_large, body_too_slow, clip, error_response
from bagel_world.server.settings import ServerSettings, serving_token

log = logging.getLogger(__name__)

APP_NAME = "bagel-world"
REPLICA_HEADER = "x-bagel-replica"  # on every answer: the index of the simulator replica that made it
# sess-r<index>.<incarnation>.<hex>: the address part that `SimulatorReplica` puts into its ids
ID_ADDRESS = re.compile(r"^(sess|ep)-r(\d{1,4})\.([0-9a-f]{8})\.")
_MULTI_SESSION_PATHS = ("/v1/sessions/step", "/v1/score")  # bodies naming several sessions


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> dict:
    """The server's error response (errors.error_response) as a forwarded-response dict."""
    r = error_response(status, code, message, headers)
    return {"status": r.status_code, "headers": list(r.raw_headers), "body": bytes(r.body)}


def _api_error(e: ApiError) -> dict:
    return _json_error(e.status, e.code, e.message, e.headers)


def parse_address(cid: str) -> tuple[str, int, str] | None:
    """(kind, replica index, incarnation) of a replica-made id, or None for any other text."""
    m = ID_ADDRESS.match(cid)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def _kind(cid: str) -> str:
    return "episode" if cid.startswith("ep-") else "session"


class SimulatorReplica:
    """One simulator and its batcher: the plain server app, driven in-process through ASGI."""

    async def __init__(self, index: int, factory: Callable[[], Any], settings: ServerSettings):
        self.index, self.incarnation = index, secrets.token_hex(4)
        self.app = create_app(factory, settings, id_tag=f"r{index}.{self.incarnation}.")
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # loads the model; Serve marks the replica ready after
        log.info("simulator replica %d (incarnation %s) is up in pid %d", index, self.incarnation, os.getpid())

    async def info(self) -> dict:
        return {"index": self.index, "incarnation": self.incarnation, "pid": os.getpid()}

    async def forward(self, request: dict) -> dict:
        """Run one HTTP request through the app: `request` has method, path, raw_path,
        root_path, query, headers, body, client, server, ids (the session and episode ids it
        names) and known (the incarnations of this replica the router has seen: an id of one of
        them that is not this one was lost in a restart; any other id is simply unknown)."""
        for cid in request["ids"]:
            addr = parse_address(cid)
            if addr is not None and addr[1] == self.index and addr[2] != self.incarnation and addr[2] in request["known"]:
                kind = _kind(cid)
                return self._answer(_json_error(410, f"{kind}_lost", f"{kind} {clip(cid)} was held by simulator "
                                                f"replica {self.index}, which has restarted since; its state is lost: "
                                                f"open a new one"))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": request["scheme"],
            "method": request["method"], "path": request["path"], "raw_path": request["raw_path"],
            "root_path": request["root_path"], "query_string": request["query"], "headers": request["headers"],
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
        started = False

        async def send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                out["status"], out["headers"] = msg["status"], list(msg.get("headers", []))
            elif msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))

        # Shielded: a client that goes away cancels this call (Serve passes the cancellation
        # on), but a session the simulator is opening must still be registered, or it leaks.
        try:
            await asyncio.shield(asyncio.ensure_future(self.app(scope, receive, send)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the app has answered its JSON 500 already, then re-raised
            log.exception("replica %d: %s %s failed", self.index, request["method"], request["path"], exc_info=exc)
            if not started:
                return self._answer(_json_error(500, "internal_error", f"internal server error: {type(exc).__name__}"))
        out["body"] = b"".join(chunks)
        return self._answer(out)

    async def missing(self, ids: list[str]) -> list[str]:
        """Which of these session ids this replica does not hold (a router's check before it
        runs a call that spans replicas)."""
        state = self.app.state.server
        return [cid for cid in ids if state is None or cid not in state.sessions]

    def _answer(self, out: dict) -> dict:
        out["incarnation"] = self.incarnation  # the router learns which incarnations it has seen
        return out


class Router:
    """The HTTP ingress: sends each request to the simulator replica its ids name."""

    DOWN_AFTER = 3  # consecutive failed probes before a replica that did not die counts as down

    def __init__(self, replicas: list, settings: ServerSettings, probe_s: float = 1.0, request_timeout_s: float = 600.0):
        self.replicas, self.settings = list(replicas), settings
        self.probe_s, self.request_timeout_s = probe_s, request_timeout_s
        n = len(self.replicas)
        self.live = [True] * n  # answers its probes (or not yet probed)
        self.misses = [0] * n  # consecutive failed probes
        self.seen: list[set[str]] = [set() for _ in range(n)]  # every incarnation seen of each replica
        # Round-robin turns: one for requests that open a session or an episode, so consecutive
        # opens alternate whatever else a client asks in between, and one for the rest.
        self._turns = {True: itertools.count(), False: itertools.count()}
        self._prober: asyncio.Task | None = None

    # ---- replica health ---------------------------------------------------------------------
    def _saw(self, k: int, incarnation: str) -> None:
        self.seen[k].add(incarnation)
        self.live[k], self.misses[k] = True, 0

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(k) for k in range(len(self.replicas))))
            await asyncio.sleep(self.probe_s)

    async def _probe(self, k: int) -> None:
        from ray.exceptions import RayActorError

        try:
            info = await asyncio.wait_for(self.replicas[k].info.remote(), timeout=max(1.0, 2 * self.probe_s))
            self._saw(k, info["incarnation"])
        except Exception as exc:  # dead, restarting (Serve queues the call until a new replica is up) or busy
            self.misses[k] += 1
            if self.live[k] and (isinstance(exc, RayActorError) or self.misses[k] >= self.DOWN_AFTER):
                log.warning("simulator replica %d does not answer (%s); new sessions go to the others", k,
                            type(exc).__name__)
                self.live[k] = False

    def _next_live(self, skip: set[int], opens: bool) -> int | None:
        n = len(self.replicas)
        for _ in range(n):
            k = next(self._turns[opens]) % n
            if self.live[k] and k not in skip:
                return k
        return None

    # ---- forwarding ---------------------------------------------------------------------------
    @staticmethod
    def _names(ids: list[str]) -> str:
        if not ids:
            return "this request"
        more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
        return f"{_kind(ids[0])} " + ", ".join(clip(i) for i in ids[:3]) + more

    async def _call(self, k: int, req: dict, ids: list[str]) -> dict:
        """Forward to replica k; a dead or unreachable replica gives 503 naming the sessions."""
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError

        if ids and not self.live[k]:
            return _json_error(503, "replica_unavailable", f"simulator replica {k}, which holds {self._names(ids)}, "
                               f"is down or restarting; its sessions may be lost", {"Retry-After": "1"})
        try:
            out = await asyncio.wait_for(self.replicas[k].forward.remote({**req, "ids": ids, "known": set(self.seen[k])}),
                                         timeout=self.request_timeout_s)
        except (RayActorError, ActorUnavailableError, DeploymentUnavailableError) as exc:
            self.live[k] = False
            log.warning("simulator replica %d failed on %s %s: %s", k, req["method"], req["path"], type(exc).__name__)
            return _json_error(503, "replica_unavailable", f"simulator replica {k}, which served {self._names(ids)}, "
                               f"died ({type(exc).__name__}); its sessions may be lost", {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return _json_error(504, "replica_timeout", f"simulator replica {k} did not answer {self._names(ids)} "
                               f"within {self.request_timeout_s:g} s")
        except Exception as exc:
            log.exception("forwarding %s %s to replica %d failed", req["method"], req["path"], k, exc_info=exc)
            return _json_error(500, "internal_error", f"internal server error: {type(exc).__name__}")
        self._saw(k, out.pop("incarnation"))
        out["headers"] = [*out["headers"], (REPLICA_HEADER.encode(), str(k).encode())]
        return out

    async def _any(self, req: dict) -> dict:
        """A request that names no session: a live replica, the next one if it dies meanwhile."""
        tried: set[int] = set()
        opens = req["method"] == "POST" and (req["route"] == "/v1/sessions" or req["route"].endswith("/episodes"))
        while (k := self._next_live(tried, opens)) is not None:
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
        concurrently; the answers are put back in the order of the request. Before any part
        runs, the router checks what only the whole request shows (lists of one length, in
        `_splittable`), that every replica it needs is up and that each holds its sessions, so
        a request refused for those reasons steps no session anywhere."""
        groups: dict[int, list[int]] = {}
        for i, cid in enumerate(ids):
            groups.setdefault(self._home(cid) or 0, []).append(i)
        down = [k for k in groups if not self.live[k]]
        if down:
            k = down[0]
            return await self._call(k, req, [ids[i] for i in groups[k]])  # 503 naming its sessions
        aligned = [k for k in ("session_ids", "actions", "seeds", "goals") if body.get(k) is not None]

        def part(idx: list[int]) -> dict:
            sub = {**body, **{k: [body[k][i] for i in idx] for k in aligned}}
            return {**req, "body": json.dumps(sub).encode()}

        # A session that its replica does not hold: that replica's answer to its part (404, or
        # 410 after a restart; a replica checks every session before it steps any) is the
        # answer, and no other part runs.
        try:
            absent = await asyncio.gather(*(
                asyncio.wait_for(self.replicas[k].missing.remote([ids[i] for i in idx]), timeout=self.request_timeout_s)
                for k, idx in groups.items()))
        except Exception:
            absent = [[] for _ in groups]  # a replica that cannot answer: its part's call says why
        for (k, idx), gone in zip(groups.items(), absent):
            if gone:
                return await self._call(k, part(idx), [ids[i] for i in idx])
        outs = await asyncio.gather(*(self._call(k, part(idx), [ids[i] for i in idx]) for k, idx in groups.items()))
        for out in outs:
            if out["status"] != 200:
                return out  # it names the session; the parts on other replicas have run
        key = "outputs" if req["route"] == "/v1/sessions/step" else "logprobs"
        merged: list = [None] * len(ids)
        for idx, out in zip(groups.values(), outs):
            for i, item in zip(idx, json.loads(out["body"])[key]):
                merged[i] = item
        served = ",".join(str(k) for k in groups)
        return {"status": 200, "body": json.dumps({key: merged}).encode(),
                "headers": [(b"content-type", b"application/json"), (REPLICA_HEADER.encode(), served.encode())]}

    def _splittable(self, body) -> list[str] | None:
        """The session ids of a well-formed multi-session body whose lists all match them, else
        None (then one replica answers, and its checks say what is wrong)."""
        if not isinstance(body, dict):
            return None
        ids = body.get("session_ids")
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids)):
            return None
        for k in ("actions", "seeds", "goals"):
            if body.get(k) is not None and not (isinstance(body[k], list) and len(body[k]) == len(ids)):
                return None
        return ids

    async def route(self, req: dict) -> dict:
        path = req["route"]
        parts = path.split("/")
        # /v1/sessions/{id}/... and /v1/episodes/{id}/... ; /v1/sessions/step is not an id
        if len(parts) >= 4 and parts[1] == "v1" and parts[2] in ("sessions", "episodes") and \
                path != "/v1/sessions/step":
            cid = parts[3]
            k = self._home(cid)
            return await (self._call(k, req, [cid]) if k is not None else self._any(req))
        if req["method"] == "POST" and path in _MULTI_SESSION_PATHS:
            try:
                ids = self._splittable(json.loads(req["body"]))
            except ValueError:
                ids = None
            if ids is not None:
                homes = {self._home(cid) for cid in ids} - {None}
                if len(homes) == 1:
                    return await self._call(homes.pop(), req, ids)
                if len(homes) > 1:
                    return await self._multi(req, json.loads(req["body"]), ids)
        return await self._any(req)  # names no replica's id: the replica's own checks answer

    async def _read_body(self, request) -> bytes | dict:
        """The body, or the 413/408 answer a single server gives (BodyLimitMiddleware's rules)."""
        limit = self.settings.max_body_bytes
        too_large = _api_error(body_too_large(limit))
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return too_large

        async def read() -> bytes | None:
            chunks, total = [], 0
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    return None
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            body = await asyncio.wait_for(read(), self.settings.body_timeout_s)  # for the whole body
        except asyncio.TimeoutError:
            return _api_error(body_too_slow(self.settings.body_timeout_s))
        return too_large if body is None else body

    async def __call__(self, request):
        from starlette.responses import Response

        if self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_forever())
        body = await self._read_body(request)
        if isinstance(body, dict):
            out = body
        else:
            scope = request.scope
            root = scope.get("root_path", "")
            path = scope["path"]
            out = await self.route({
                "method": request.method, "path": path, "raw_path": scope.get("raw_path") or path.encode(),
                "root_path": root, "route": path[len(root):] if root and path.startswith(root) else path,
                "query": scope.get("query_string", b""),
                "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length",
                                                                                      b"transfer-encoding")]
                + [(b"content-length", str(len(body)).encode())],
                "body": body, "scheme": scope.get("scheme", "http"), "client": scope.get("client"),
                "server": scope.get("server"),
            })
        resp = Response(content=out["body"], status_code=out["status"])
        keep_length = request.method == "HEAD"  # a HEAD answer states the length of the body it omits
        headers = [(k, v) for k, v in out["headers"]
                   if k.lower() != b"transfer-encoding" and (keep_length or k.lower() != b"content-length")]
        if not keep_length or not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(out["body"])).encode()))
        resp.raw_headers = headers
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
    handles = [sim.options(name=f"sim-{k}", ray_actor_options=dict(ray_actor_options or _replica_options(False)))
               .bind(k, factory, settings) for k in range(replicas)]
    return router.options(name="router").bind(handles, settings, probe_s)


def _replica_options(gpu: bool) -> dict:
    """Ray resources of one simulator replica: a CPU, and a whole GPU on cuda."""
    return {"num_cpus": 1, "num_gpus": 1} if gpu else {"num_cpus": 1}


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
    token = serving_token(args.pop("token", None))
    hosts = tuple(h for h in str(args.pop("allowed_hosts", "")).split(",") if h.strip())
    kinds = {f.name: str(f.type) for f in fields(ServerSettings) if f.name not in ("token", "allowed_hosts")}
    unknown = sorted(set(args) - set(kinds))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; accepted: replicas, checkpoint, device, token, "
                         f"allowed_hosts, {', '.join(sorted(kinds))}")
    limits = {name: limit_parser(kinds[name])(str(value)) for name, value in args.items()}
    return build_app(factory, ServerSettings(token=token, allowed_hosts=hosts, **limits), replicas,
                     ray_actor_options=_replica_options((factory.device or "").startswith("cuda")))


def serve_ray(checkpoint=None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, device=None,
              replicas: int = 2, **limits) -> None:
    """`bagel-world serve --ray`: start a local Ray instance (or join RAY_ADDRESS), run the app
    on Serve's HTTP proxy at host:port, and block until interrupted. Without --device, replicas
    take a GPU each when the cluster has one per replica."""
    ray, serve = _import_ray()
    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    settings = ServerSettings(token=serving_token(token, host), **limits)
    ray.init(ignore_reinit_error=True, include_dashboard=False)
    have = ray.cluster_resources()
    gpu = (device or "").startswith("cuda") or (device is None and have.get("GPU", 0) >= replicas)
    options = _replica_options(gpu)
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
