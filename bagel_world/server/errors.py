"""Structured errors: every failure leaves the server as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   details: list | None = None) -> JSONResponse:
    body: dict = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


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
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return ApiError(503, "out_of_memory", f"the model ran out of memory on this batch; retry later ({text})",
                        headers={"Retry-After": "1"})
    log.exception("simulator call failed", exc_info=exc)
    return ApiError(500, "model_error", f"the model call failed: {type(exc).__name__}: {text}")


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 413: "body_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests"}


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
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
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
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
