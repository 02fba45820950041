"""Strict JSON request bodies: UTF-8 without a byte order mark, standard JSON
only (no NaN or Infinity tokens), no repeated keys, bounded nesting, and a
JSON media type. Anything else is refused before validation."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

_BOM = b"\xef\xbb\xbf"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class MalformedBody(HTTPException):
    """400: the body cannot be read as one unambiguous JSON document."""

    def __init__(self, problem: str) -> None:
        super().__init__(400, f"the request body {problem}")
        self.problem = problem


class UnsupportedMediaType(HTTPException):
    def __init__(self, sent: str | None) -> None:
        super().__init__(
            415, f"send the body as application/json, not {sent or 'no content-type'}"
        )
        self.problem = "must be application/json"


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two JSON parsers may keep different copies of a repeated key (the
    # first, the last): refuse the ambiguity rather than pick one.
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"repeats the key {key!r}")
        doc[key] = value
    return doc


def _integer(text: str) -> int:
    # int() refuses very long digit strings with a message about Python's
    # settings; say what is wrong with the body instead.
    limit = sys.get_int_max_str_digits()
    if limit and len(text.lstrip("-")) > limit:
        raise ValueError(f"holds a number too long ({len(text)} characters)")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON")


def parse(raw: bytes) -> Any:
    if raw.startswith(_BOM):
        raise MalformedBody("starts with a byte order mark; send UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            # Exact decimals: 17.340000000000000000001 must not become 17.34.
            parse_float=Decimal,
            parse_int=_integer,
        )
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise MalformedBody("nests arrays or objects too deeply") from None
    except ValueError as exc:  # repeated key, NaN/Infinity, oversized integer
        raise MalformedBody(str(exc)) from None


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read by ``parse``, after a media type check."""

    def get_route_handler(
        self,
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method in _BODY_METHODS:
                content_type = request.headers.get("content-type")
                if not _is_json(content_type):
                    raise UnsupportedMediaType(content_type)
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
