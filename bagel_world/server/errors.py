"""Structured errors: every failure leaves the server as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MAX_ECHO = 64  # characters of a client-supplied id or name that an error message repeats
MAX_MESSAGE = 2000  # characters of any error message
OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def clip(text: object, limit: int = MAX_ECHO) -> str:
    """`text` as a quoted repr of at most `limit` characters (plus '…'), safe to echo back.

    `ascii()` escapes control, zero-width and lone surrogate characters, so the echo can
    neither break the JSON encoder nor hide text from whoever reads the message.
    """
    text = str(text)
    return ascii(text[:limit]) + ("…" if len(text) > limit else "")


def clean_message(message: str) -> str:
    """A message safe to send: no object reprs (they leak addresses), no lone surrogates, bounded."""
    message = OBJECT_REPR.sub(lambda m: f"<{m.group(1).rsplit('.', 1)[-1]}>", str(message))
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


class ApiError(Exception):
    """An error with its HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   details: list | None = None) -> JSONResponse:
    body: dict = {"error": {"code": code, "message": clean_message(message)}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def body_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds the server's limit of {max_bytes} bytes")


def body_too_slow(timeout_s: float) -> ApiError:
    return ApiError(408, "request_timeout", f"the request body did not arrive within the server's limit of "
                                            f"{timeout_s:g} s", headers={"Connection": "close"})


def from_simulator_error(exc: BaseException) -> ApiError:
    """Map an exception raised by a simulator call to the error the client sees.

    Input errors the simulator detects (wrong frame size, unknown task) are the client's
    (422); a failed model call (out of GPU memory, a CUDA error) fails only the requests
    in that call (503 for memory, 500 otherwise) and the server goes on.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):
        return ApiError(422, "invalid_input", str(exc))
    if isinstance(exc, KeyError):
        msg = exc.args[0] if exc.args else "unknown session"
        return ApiError(404, "unknown_session", str(msg))
    if isinstance(exc, NotImplementedError):  # e.g. ask() on a backend without an understanding path
        return ApiError(501, "not_implemented", str(exc))
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return ApiError(503, "out_of_memory", f"the model ran out of memory on this batch; retry later ({text})",
                        headers={"Retry-After": "1"})
    log.exception("simulator call failed", exc_info=exc)
    return ApiError(500, "model_error", f"the model call failed: {type(exc).__name__}: {text}")


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 413: "body_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests"}


def _loc_part(part: object) -> str:
    # An unknown field's name is client text: bounded and escaped like any echoed id.
    text = str(part)
    plain = isinstance(part, int) or (len(text) <= MAX_ECHO and text.isascii() and text.isidentifier())
    return text if plain else clip(text)


def _error_text(e: dict) -> str:
    if e.get("type") == "string_unicode":  # pydantic's wording does not say what is wrong
        return "contains a lone UTF-16 surrogate (U+D800 to U+DFFF), which no field accepts"
    return clean_message(str(e.get("msg", "invalid")))


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(_loc_part(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {_error_text(e)}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        details = [
            {"loc": [_loc_part(p) for p in e.get("loc", ())], "msg": _error_text(e),
             "type": str(e.get("type", ""))}
            for e in errors[:20]
        ]
        return error_response(422, "invalid_request", _validation_message(errors), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", f"internal server error: {type(exc).__name__}")
