"""Dependencies shared by the routers: the server state and the bearer-token check."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from bagel_world.server.errors import ApiError
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
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False  # e.g. TestClient's "testserver"
