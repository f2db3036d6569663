"""Dependencies shared by the routers: the server state and the bearer-token check."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from bagel_world.server.errors import ApiError, clip
from bagel_world.server.settings import ServerSettings, is_loopback
from bagel_world.server.state import ServerState


def get_state(request: Request) -> ServerState:
    state = getattr(request.app.state, "server", None)
    if state is None:
        raise ApiError(503, "not_ready", "the simulator is still loading")
    return state


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def client_key(request: Request) -> str:
    """Who a session counts against for `max_sessions_per_client`: the peer's address.

    Not the token: a server has one token, shared by all its clients, so it tells no
    client apart. Behind a proxy every client has the proxy's address.
    """
    return request.client.host if request.client is not None else "unknown"


def require_token(request: Request) -> None:
    token = request.app.state.settings.token
    if token is None:
        # No token: loopback only. `serve` refuses to bind elsewhere without one; this also
        # covers an app run by hand (`uvicorn --host 0.0.0.0`) when reached from outside.
        local = (request.scope.get("server") or ("127.0.0.1", 0))[0]
        if _is_ip(local) and not is_loopback(local):
            raise ApiError(401, "token_required", "this server has no token, so it only answers on loopback; "
                                                  "restart it with --token to serve other machines")
        _check_host(request)
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})


def host_name(header: str) -> str:
    """The name in a Host header, without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _check_host(request: Request) -> None:
    """421 unless the Host header names this machine or a configured name.

    A page on any web site can reach a loopback server through DNS rebinding (its own name,
    re-pointed at 127.0.0.1); its requests then carry that name as Host, so a server without
    a token answers only requests addressed to a loopback name.
    """
    s: ServerSettings = request.app.state.settings
    name = host_name(request.headers.get("host", ""))
    if name == "localhost" or (_is_ip(name) and is_loopback(name)) or name in s.allowed_hosts:
        return
    accepted = ["localhost", "127.0.0.1", "[::1]", *s.allowed_hosts]
    raise ApiError(421, "host_not_allowed",
                   f"Host {clip(name)} is not accepted by this server, which has no token; accepted: "
                   f"{', '.join(accepted)} (any port). Add names with --allowed-host, or restart with --token")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False  # e.g. TestClient's "testserver"
