"""One JSON shape for every error, and one status code for each kind."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException


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
            error_body("malformed_json", "the request body is not valid JSON"), 400
        )
    details = [
        {"field": _field_name(e.get("loc", ())), "problem": _problem(e)} for e in errors
    ]
    fields = ", ".join(sorted({d["field"] or "body" for d in details}))
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
    code = {404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return json_response(
        error_body(code, str(exc.detail)),
        exc.status_code,
        getattr(exc, "headers", None),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(ApiError, _api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)  # type: ignore[arg-type]
