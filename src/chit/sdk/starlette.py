"""Pure ASGI middleware for Starlette and any other ASGI framework.

    app = Starlette(routes=..., middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])
    app = BearerAuthMiddleware(any_asgi_app, verifier, required=False)  # anonymous requests pass too

It reads the bearer token, verifies it, puts the principal in ``scope["chit.principal"]`` (read it
with ``principal_of``) and in ``chit.sdk.context`` for the request, and answers RFC 6750 errors;
an ``AuthError`` raised by the application before it started its response answers the same way.
Routes check permissions themselves (``principal.require(...)``). In Starlette, add it through
``middleware=[...]``: wrapped around the whole app from outside it still authenticates, but an
``AuthError`` from a route then meets Starlette's own 500 handler first.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chit.core.principal import Principal
from chit.errors import AuthError
from chit.sdk import context
from chit.sdk.jwks_client import KeysUnavailableError
from chit.sdk.verifier import MissingTokenError, TokenVerifier, bearer_token, challenge

SCOPE_KEY = "chit.principal"
POLICY_VIOLATION = 1008  # WebSocket close code (RFC 6455 §7.4.1)


def principal_of(scope: Scope | Any) -> Principal | None:
    """The principal of a request (a Starlette ``Request`` or a raw ASGI scope)."""
    raw = getattr(scope, "scope", scope)
    principal = raw.get(SCOPE_KEY)
    return principal if isinstance(principal, Principal) else None


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        *,
        required: bool = True,
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.required = required
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        values = [value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"]
        try:
            token = bearer_token(values)
            principal: Principal | None = await self.verifier.verify(token)
        except MissingTokenError as exc:
            if self.required:
                await _refuse(scope, send, exc)
                return
            token, principal = "", None
        except AuthError as exc:
            await _refuse(scope, send, exc)
            return
        except KeysUnavailableError as exc:
            await _unavailable(scope, send, exc.retry_after)
            return
        scope[SCOPE_KEY] = principal
        bound = context.bind(principal, token) if principal is not None else None
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except AuthError as exc:
            if started:
                raise
            await _refuse(scope, send, exc)
        finally:
            if bound is not None:
                context.unbind(bound)


async def _refuse(scope: Scope, send: Send, error: AuthError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": error.reason[:120]})
        return
    body = {"error": error.error, "error_description": error.reason} if error.error else {}
    headers = {"www-authenticate": challenge(error), "content-type": "application/json", "cache-control": "no-store"}
    await _answer(send, error.status_code, body, headers)


async def _unavailable(scope: Scope, send: Send, retry_after: int) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013, "reason": "try again later"})
        return
    headers = {"retry-after": str(retry_after), "content-type": "application/json"}
    await _answer(send, 503, {"error": "temporarily_unavailable"}, headers)


async def _answer(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    content = json.dumps(body).encode()
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})
