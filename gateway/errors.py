"""One JSON shape for every error, and one status code for each kind."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

log = logging.getLogger("gateway.errors")

# An error body lists this many problems at most, so that a body full of bad
# items costs the client a short answer, not the server a long one.
MAX_ERROR_DETAILS = 20
_BATCH_LOC = ("body", "transactions")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # Sorted keys make a replayed answer byte-identical to the first one,
    # whichever store it came back from.
    return Response(
        orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def send_error(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    """An error answered straight from ASGI middleware, in the one error shape."""
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in (headers or {}).items()
        ),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or []}


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


def _problem(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    # pydantic prefixes messages raised by validators.
    return msg.removeprefix("Value error, ")


async def _validation_handler(
    request: Request, exc: RequestValidationError
) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return json_response(
            error_body(
                "malformed_json",
                "the request body is not valid JSON",
                [{"field": "body", "problem": "not valid JSON"}],
            ),
            400,
        )
    if any(
        e.get("type") == "too_long" and tuple(e.get("loc", ())) == _BATCH_LOC
        for e in errors
    ):
        return json_response(
            error_body(
                "batch_too_large",
                "the batch holds more transactions than the gateway accepts",
                [{"field": "transactions", "problem": "too many items"}],
            ),
            413,
        )
    details = [
        {"field": _field_name(e.get("loc", ())), "problem": _problem(e)}
        for e in errors[:MAX_ERROR_DETAILS]
    ]
    fields = ", ".join(sorted({d["field"] or "body" for d in details}))
    if len(errors) > MAX_ERROR_DETAILS:
        fields += f" and {len(errors) - MAX_ERROR_DETAILS} more problems"
    return json_response(
        error_body("validation_error", f"invalid request: {fields}", details), 422
    )


async def _api_error_handler(request: Request, exc: ApiError) -> Response:
    return json_response(
        error_body(exc.code, exc.message, exc.details), exc.status, exc.headers
    )


async def _http_error_handler(
    request: Request, exc: StarletteHTTPException
) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    details = []
    problem = getattr(exc, "problem", None)
    if exc.status_code == 400:
        details = [{"field": "body", "problem": problem or "cannot be parsed"}]
    elif exc.status_code == 415:
        details = [{"field": "content-type", "problem": problem or "unsupported"}]
    elif exc.status_code == 404:
        details = [{"field": "path", "problem": "no such endpoint"}]
    elif exc.status_code == 405:
        details = [{"field": "method", "problem": f"{request.method} not allowed"}]
    return json_response(
        error_body(code, str(exc.detail), details),
        exc.status_code,
        getattr(exc, "headers", None),
    )


_HTTP_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _unexpected_error_handler(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log only; the client learns nothing internal.
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return json_response(
        error_body(
            "internal_error",
            "the request failed unexpectedly; nothing was acknowledged",
            [{"field": None, "problem": "internal error"}],
        ),
        500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)  # type: ignore[arg-type]
