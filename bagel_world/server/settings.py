"""Server limits and options, one dataclass (cleanrl's `Args` habit)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass
class ServerSettings:
    max_sessions: int = 256  # open sessions + env episodes, all clients together
    # Of those, per client address. None: half of max_sessions on a server with a token; no
    # quota without one (it answers only on loopback, where every client has one address).
    max_sessions_per_client: int | None = None
    session_ttl_s: float = 900.0  # idle sessions/episodes are closed after this long
    max_body_bytes: int = 8 * 1024 * 1024  # whole request body, before any parsing
    max_image_side: int = 2048  # width or height of an uploaded PNG, read from its header
    max_image_pixels: int = 1024 * 1024  # width * height of an uploaded PNG
    max_frames_per_request: int = 256  # start frames, frames to embed
    max_action_length: int = 256  # characters in one action
    max_text_length: int = 2048  # characters in a prompt, question, answer or instruction
    max_batch_size: int = 32  # sessions per model step call
    max_batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_episode_frames: int = 1000  # frames an episode keeps for its GIF
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
        if self.session_ttl_s <= 0:
            raise ValueError(f"session_ttl_s must be > 0, got {self.session_ttl_s!r}")
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
