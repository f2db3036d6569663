"""Server limits and options, one dataclass (cleanrl's `Args` habit)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields


def _opt(default, help: str):
    # The help text lives with the field: `serve --help` shows it (add_arguments below).
    return field(default=default, metadata={"help": help})


@dataclass
class ServerSettings:
    max_sessions: int = _opt(256, "open sessions + env episodes, all clients together")
    max_sessions_per_client: int | None = _opt(
        None, "of those, per client address; none: half of max_sessions on a server with a "
              "token, no quota without one (it answers only on loopback, where all clients share one address)")
    session_ttl_s: float = _opt(900.0, "idle sessions and episodes are closed after this many seconds")
    max_body_bytes: int = _opt(8 * 1024 * 1024, "bytes of a whole request body, before any parsing")
    body_timeout_s: float = _opt(30.0, "seconds a client may take to send a request body (408 after)")
    max_image_side: int = _opt(2048, "width or height of an uploaded PNG, read from its header")
    max_image_pixels: int = _opt(1024 * 1024, "width * height of an uploaded PNG")
    max_frames_per_request: int = _opt(256, "start frames, frames to embed, per request")
    max_action_length: int = _opt(256, "characters in one action")
    max_text_length: int = _opt(2048, "characters in a prompt, question, answer or instruction")
    max_batch_size: int = _opt(32, "sessions per model step call")
    max_batch_wait_ms: float = _opt(5.0, "how long the first request of a batch waits for company")
    max_episode_frames: int = _opt(1000, "frames an episode keeps for its GIF")
    token: str | None = None  # when set, every /v1 request needs `Authorization: Bearer <token>`
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a token, besides loopback ones

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_body_bytes", "max_image_side", "max_image_pixels",
                     "max_frames_per_request", "max_action_length", "max_text_length", "max_batch_size",
                     "max_episode_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_sessions_per_client is not None and int(self.max_sessions_per_client) < 1:
            raise ValueError(f"max_sessions_per_client must be >= 1 or None, got {self.max_sessions_per_client!r}")
        for name in ("session_ttl_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_batch_wait_ms < 0:
            raise ValueError(f"max_batch_wait_ms must be >= 0, got {self.max_batch_wait_ms!r}")
        self.allowed_hosts = tuple(h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip())
        if self.token is not None and not self.token.strip():
            raise ValueError("token must be a non-empty string or None")


    @property
    def client_quota(self) -> int | None:
        """The per-client limit in force (see max_sessions_per_client), or None."""
        if self.max_sessions_per_client is not None:
            return int(self.max_sessions_per_client)
        return max(1, self.max_sessions // 2) if self.token is not None else None


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve to anything


def serving_token(token: str | None, host: str | None = None) -> str | None:
    """The token in force: `token`, else BAGEL_WORLD_TOKEN, else None. With `host`, a
    non-loopback address without one is refused (a ValueError saying what to do)."""
    import os

    token = token or os.environ.get("BAGEL_WORLD_TOKEN") or None
    if host is not None and not is_loopback(host) and not token:
        raise ValueError(f"refusing to serve on non-loopback address {host!r} without a token: pass --token "
                         f"(or set BAGEL_WORLD_TOKEN), or bind 127.0.0.1")
    return token


# ---- `bagel-world serve` flags and environment variables -----------------------------------
ENV_PREFIX = "BAGEL_WORLD_"
_SKIP = ("token", "allowed_hosts")  # --token and --allowed-host are spelled by hand in the CLI


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def limit_parser(kind: str):
    """str -> value for a field annotated `kind` ('int', 'float' or 'int | None')."""
    def parse(text: str):
        text = text.strip()
        if "None" in kind and text.lower() in ("none", ""):
            return None
        return float(text) if kind == "float" else int(text)
    return parse


def add_arguments(parser) -> None:
    """One flag per limit (--max-sessions ...), each also read from BAGEL_WORLD_<NAME>."""
    for f in fields(ServerSettings):
        if f.name in _SKIP:
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), default=None, metavar=str(f.type).replace(" ", ""),
                            help=f"{f.metadata['help']} (env {env_name(f.name)}; default {f.default})")


def settings_kwargs(args, environ) -> dict:
    """The limits given as flags, else as environment variables; a ValueError names a bad value."""
    out = {}
    for f in fields(ServerSettings):
        if f.name in _SKIP:
            continue
        flag, env = getattr(args, f.name, None), environ.get(env_name(f.name))
        text, where = (flag, "--" + f.name.replace("_", "-")) if flag is not None else (env, env_name(f.name))
        if text is None:
            continue
        try:
            out[f.name] = limit_parser(str(f.type))(text)
        except ValueError:
            raise ValueError(f"{where}={text!r} is not accepted: give {'a number' if f.type == 'float' else 'an integer'}"
                             f"{' or none' if 'None' in str(f.type) else ''}") from None
    hosts = list(getattr(args, "allowed_host", None) or []) + [
        h.strip() for h in environ.get(env_name("allowed_hosts"), "").split(",") if h.strip()]
    if hosts:
        out["allowed_hosts"] = tuple(hosts)
    return out
