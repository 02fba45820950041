"""API keys: who is calling (authentication) and what it may do (scopes).

Keys are configured as hashes only, in ``API_KEYS``: comma-separated entries
``name:scope1+scope2:sha256hex``. A caller sends its key in ``X-API-Key``.
The gateway hashes what it receives and compares the digest with every
configured digest in constant time (``python -m gateway.keys new`` makes a
key and prints its entry).

Authentication runs as middleware, before the body is read, so an unknown
caller costs no body buffering, parsing or scoring. Authorisation is a
dependency that each route declares with ``requires(scope)``; a new route
(an outcomes endpoint, say) only declares its scope.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ApiError, error_body, send_error

log = logging.getLogger("gateway.auth")

HEADER = "X-API-Key"
SCOPES = ("score", "outcomes", "operator")
# Paths anyone may read: liveness for orchestrators, and the API's own
# description (it names routes and fields, never data or keys).
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

_ENTRY = re.compile(r"^([A-Za-z0-9._-]{1,64}):([a-z+]+):([0-9a-f]{64})$")


class ApiKeyConfigError(ValueError):
    """An API_KEYS entry that cannot be read."""


@dataclass(frozen=True)
class Client:
    name: str
    scopes: frozenset[str]
    sha256: bytes


ANONYMOUS = Client("anonymous", frozenset(SCOPES), b"")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(text: str) -> list[Client]:
    """Read ``name:scope+scope:sha256hex`` entries separated by commas."""
    clients: list[Client] = []
    for raw in text.replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None:
            # The entry holds no secret (a hash only), but print just its name.
            raise ApiKeyConfigError(
                f"API_KEYS entry {entry.split(':', 1)[0]!r} is not "
                "name:scope1+scope2:sha256hex"
            )
        name, scopes_text, hex_digest = match.groups()
        scopes = frozenset(scopes_text.split("+"))
        unknown = sorted(scopes - set(SCOPES))
        if unknown:
            raise ApiKeyConfigError(
                f"API_KEYS entry {name!r}: unknown scope {', '.join(unknown)}; "
                f"known: {', '.join(SCOPES)}"
            )
        clients.append(Client(name, scopes, bytes.fromhex(hex_digest)))
    if len({c.sha256 for c in clients}) != len(clients):
        raise ApiKeyConfigError("API_KEYS holds the same key twice")
    return clients


class KeyRing:
    def __init__(self, clients: list[Client]) -> None:
        self._clients = clients

    @property
    def enabled(self) -> bool:
        return bool(self._clients)

    def identify(self, key: str | None) -> Client | None:
        if not key:
            return None
        presented = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        # Every digest is compared, so the time taken says nothing about which
        # entry (if any) matched.
        for client in self._clients:
            if hmac.compare_digest(presented, client.sha256):
                found = client
        return found


class Authenticate:
    """Refuses a request without a valid key (401) before any other work."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.keys.enabled:
            scope.setdefault("state", {})["client"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        key = None
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                key = value.decode("latin-1")
                break
        client = self.keys.identify(key)
        if client is None and scope["path"] not in OPEN_PATHS:
            await _unauthorised(send, "missing" if not key else "not a valid key")
            return
        scope.setdefault("state", {})["client"] = client
        await self.app(scope, receive, send)


async def _unauthorised(send: Send, problem: str) -> None:
    await send_error(
        send,
        401,
        error_body(
            "unauthorized",
            f"a valid API key is required in the {HEADER} header",
            [{"field": HEADER, "problem": problem}],
        ),
        {"WWW-Authenticate": HEADER},
    )


_api_key_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="An API key made with `python -m gateway.keys new`",
)


def requires(*scopes: str) -> Any:
    """A route dependency: the caller's key must carry one of ``scopes`` (else 403)."""
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValueError(f"unknown scope {unknown!r}")
    needed = " or ".join(repr(s) for s in scopes)
    lacking = "lacks scope " + " or ".join(scopes)

    async def check(
        request: Request, _key: str | None = Security(_api_key_header)
    ) -> None:
        client: Client | None = getattr(request.state, "client", None)
        if client is None:
            # Authentication middleware absent or bypassed: refuse, never guess.
            raise ApiError(
                401,
                "unauthorized",
                f"a valid API key is required in the {HEADER} header",
                [{"field": HEADER, "problem": "missing"}],
            )
        if client.scopes.isdisjoint(scopes):
            raise ApiError(
                403,
                "forbidden",
                f"this key may not use this endpoint: it needs the {needed} scope",
                [{"field": HEADER, "problem": lacking}],
            )

    return Security(check)
