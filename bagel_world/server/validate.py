"""Checks of client input against the server's limits; each names the limit it enforces."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from bagel_world.server.errors import ApiError
from bagel_world.server.images import decode_png_b64, encode_png, png_b64
from bagel_world.server.schemas import Frame
from bagel_world.server.settings import ServerSettings


def check_action(action: str, s: ServerSettings) -> None:
    if not action.strip():
        raise ApiError(422, "invalid_action", "an action must be a non-empty string")
    if len(action) > s.max_action_length:
        raise ApiError(422, "action_too_long", f"action has {len(action)} characters; the server accepts at most "
                                               f"{s.max_action_length}")


def check_text(text: str | None, what: str, s: ServerSettings) -> None:
    if text is not None and len(text) > s.max_text_length:
        raise ApiError(422, "text_too_long", f"{what} has {len(text)} characters; the server accepts at most "
                                             f"{s.max_text_length}")


def check_count(n: int, what: str, limit: int) -> None:
    if n > limit:
        raise ApiError(422, "too_many_items", f"{n} {what} in one request; the server accepts at most {limit}")


def decode_frames(frames: Sequence[str], s: ServerSettings, what: str = "frames") -> list[np.ndarray]:
    check_count(len(frames), what, s.max_frames_per_request)
    return [decode_png_b64(f, s.max_image_side, s.max_image_pixels, what=f"{what}[{i}]") for i, f in enumerate(frames)]


def wants_png(request: Request) -> bool:
    return "image/png" in request.headers.get("accept", "").lower()


def frame_response(request: Request, frame: np.ndarray):
    """A frame as raw `image/png` when the client asks for it, else base64 PNG in JSON."""
    if wants_png(request):
        return Response(encode_png(frame), media_type="image/png")
    return Frame(frame=png_b64(frame), height=int(frame.shape[0]), width=int(frame.shape[1]))
