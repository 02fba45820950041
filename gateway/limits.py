"""Request limits: a body size limit enforced while the body is read, before any
work, and an overall deadline for each request."""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_body, send_error

log = logging.getLogger("gateway.limits")

# When the current request must be answered (time.monotonic()); None outside one.
_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


def time_left(budget_s: float) -> float:
    """``budget_s``, or less when the request's deadline comes sooner."""
    deadline = _deadline.get()
    if deadline is None:
        return budget_s
    return max(0.0, min(budget_s, deadline - time.monotonic()))


class BodySizeLimit:
    """Reads the body up to ``max_bytes`` and answers 413 beyond it.

    The body is buffered here and handed to the application in one piece, so
    that an oversized body is refused however it is framed (Content-Length or
    chunked) and the application never sees part of one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        await send_error(
            send,
            413,
            error_body(
                "payload_too_large",
                f"request body exceeds {self.max_bytes} bytes",
                [{"field": "body", "problem": f"larger than {self.max_bytes} bytes"}],
            ),
            {"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.max_bytes
            ):
                await self._reject(send)
                return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {
                    "type": "http.request",
                    "body": b"".join(chunks),
                    "more_body": False,
                }
            return await receive()

        await self.app(scope, replay, send)


class Deadline:
    """Answers 503 ``deadline_exceeded`` once a request has run ``timeout_s``.

    Each dependency has its own timeout; this bounds their sum and anything
    they miss (a slow client body, a dependency that accepts and never
    answers). The work in flight is cancelled; a decision it committed before
    the cancellation is not acknowledged, and a retry replays it.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(self.timeout_s)
        token = _deadline.set(time.monotonic() + self.timeout_s)
        try:
            async with deadline:
                await self.app(scope, receive, send_tracked)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning(
                "deadline of %.0f ms exceeded on %s %s",
                self.timeout_s * 1000,
                scope["method"],
                scope["path"],
            )
            if started:
                return
            await send_error(
                send,
                503,
                error_body(
                    "deadline_exceeded",
                    "the request did not complete in time; nothing was "
                    "acknowledged, retry later",
                    [{"field": None, "problem": "request deadline exceeded"}],
                ),
                {"Retry-After": "1"},
            )
        finally:
            _deadline.reset(token)
