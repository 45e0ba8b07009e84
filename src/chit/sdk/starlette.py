"""Pure ASGI middleware for Starlette and any other ASGI framework.

    app = Starlette(routes=..., middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])
    app = BearerAuthMiddleware(any_asgi_app, verifier, required=False)  # anonymous requests pass too

It reads the bearer token, verifies it, puts the principal in ``scope["chit.principal"]`` (read it
with ``principal_of``) and in ``chit.sdk.context`` for the request, and answers RFC 6750 errors;
an ``AuthError`` raised by the application before it started its response answers the same way.
Routes check permissions themselves (``principal.require(...)``); a chit's checks run here with the
request's method and path (``scope["path"]``, percent-decoded as the router matches it: the form of the
``path`` fact, ``chit.core.chit_authorizer``), those that need the permission or the resource wait for the
route's decisions. In Starlette, add it through ``middleware=[...]``: wrapped around the whole app from outside
it still authenticates, but an ``AuthError`` from a route then meets Starlette's own 500 handler first.
The request's method goes to ``authorize``, so a verifier whose revocation list is stale refuses writes
here too: 503 with ``Retry-After`` (a WebSocket, which has no method, is closed with 1013).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chit.answers import answer_to
from chit.errors import AuthError, ChitError, InsufficientScopeError, MissingTokenError, ServiceUnavailableError
from chit.policy.principals import Principal
from chit.sdk import context
from chit.sdk.verifier import TokenVerifier

SCOPE_KEY = "chit.principal"
POLICY_VIOLATION = 1008  # WebSocket close codes (RFC 6455 §7.4.1)
TRY_AGAIN_LATER = 1013


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
        verifier = self.verifier
        try:
            token = verifier.token_of(scope["headers"])
            verified = verifier.verify_cached(token) or await verifier.verify(token)
            principal: Principal | None = verifier.authorize(
                verified, (), method=scope.get("method"), path=scope["path"]
            )
            if principal is not None and principal.refusal is not InsufficientScopeError:
                # a FastAPI Verifier's principal: this middleware answers the plain error itself
                principal = replace(principal, refusal=InsufficientScopeError)
        except MissingTokenError as exc:
            if self.required:
                await _refuse(scope, send, exc)
                return
            token, principal = "", None
        except (AuthError, ServiceUnavailableError) as exc:
            await _refuse(scope, send, exc)
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


async def _refuse(scope: Scope, send: Send, error: ChitError) -> None:
    answer = answer_to(error)
    if scope["type"] == "websocket":
        if answer.status == 503:
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "try again later"})
        else:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": answer.description[:120]})
        return
    content = json.dumps(answer.body()).encode()
    headers = {**answer.headers, "Content-Type": "application/json", "Cache-Control": "no-store"}
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": content})
