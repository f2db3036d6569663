"""Checks of client input against the server's limits; each names the limit it enforces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from bagel_world.server.errors import ApiError
from bagel_world.server.images import decode_png_b64, encode_png, png_b64
from bagel_world.server.schemas import Frame
from bagel_world.server.settings import ServerSettings

# One rule per text field, the same for sessions and env episodes (the envs' own rule:
# their action space and reset options take printable ASCII). Control characters (NUL,
# ESC, DEL), zero-width and bidi characters and lone UTF-16 surrogates are refused here,
# at the boundary, so they never reach a batched model call that other clients share.
PRINTABLE_ASCII = frozenset(chr(c) for c in range(32, 127))
CHARSET = "printable ASCII (codes 32-126, space included)"
ACTION_RULE = "1 to max_action_length characters of " + CHARSET + ", not all blank"
TEXT_RULE = "at most max_text_length characters of " + CHARSET


def _check_charset(text: str, field: str, rule: str) -> None:
    bad = sorted({c for c in text if c not in PRINTABLE_ASCII})
    if bad:
        listed = ", ".join(f"U+{ord(c):04X}" for c in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise ApiError(422, "invalid_input", f"{field} contains characters that are not accepted ({listed}); "
                                             f"accepted: {rule}")


def check_action(action: str, s: ServerSettings, field: str = "action") -> None:
    """An action text (session steps and episode steps): ACTION_RULE."""
    if not action.strip():
        raise ApiError(422, "invalid_action", f"{field} must be a non-empty string; accepted: {ACTION_RULE}")
    if len(action) > s.max_action_length:
        raise ApiError(422, "action_too_long", f"{field} has {len(action)} characters; the server accepts at most "
                                               f"{s.max_action_length}")
    _check_charset(action, field, ACTION_RULE)


def check_text(text: str | None, field: str, s: ServerSettings, required: bool = False) -> None:
    """A prompt, instruction, question or answer: TEXT_RULE (and not blank when `required`)."""
    if required and (text is None or not text.strip()):
        raise ApiError(422, "invalid_input", f"{field} must be a non-empty string; accepted: {TEXT_RULE}")
    if text is None:
        return
    if len(text) > s.max_text_length:
        raise ApiError(422, "text_too_long", f"{field} has {len(text)} characters; the server accepts at most "
                                             f"{s.max_text_length}")
    _check_charset(text, field, TEXT_RULE)


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
