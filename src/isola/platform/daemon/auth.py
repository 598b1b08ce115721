"""Who sent a request: root on the unix socket is the admin, a bearer token is its tenant.

The unix socket is created 0600 by root, so whoever can connect to it is root, as with Docker's socket; a
request there without a token is the admin's, with a token the tenant's (so the same socket serves the CLI
as root and as a tenant). Over TCP the token is required: anyone on the network can connect.

Which listener a request came through is stamped on the ASGI scope by `Transport`, one wrapper per listener,
rather than guessed from the shape of the client address.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from isola.errors import PermissionDeniedError
from isola.platform.access import ADMIN, Caller
from isola.platform.service import Platform

TRANSPORT_KEY = "isola.transport"


class Transport:
    """The app as served on one listener."""

    def __init__(self, app: ASGIApp, transport: Literal["unix", "tcp"]) -> None:
        self.app = app
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[TRANSPORT_KEY] = self.transport
        await self.app(scope, receive, send)


def caller(connection: HTTPConnection) -> Caller:
    """The caller of an HTTP request or WebSocket (a FastAPI dependency)."""
    header = connection.headers.get("authorization")
    transport = connection.scope.get(TRANSPORT_KEY, "tcp")  # unknown: treat as the network
    if header is None:
        if transport == "unix":
            return ADMIN
        raise PermissionDeniedError(
            "a token is required over TCP: send Authorization: Bearer <token>",
            hint="an admin gets a tenant's token with `isola tenant token NAME`",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PermissionDeniedError("the Authorization header must be: Bearer <token>")
    platform: Platform = connection.app.state.platform
    return platform.tenants.authenticate(token.strip())
