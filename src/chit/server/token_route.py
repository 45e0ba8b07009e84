"""``POST /oauth2/token`` as a bare ASGI route in front of FastAPI.

The token endpoint is what every service calls all day; FastAPI's routing, dependency and exception
layers cost about a fifth of a token's CPU there and do nothing for it (its form is parsed by
``chit.server.forms``, its errors rendered by ``chit.answers``). So this route answers it before FastAPI
sees the request; every other method and path goes on to the app. What wraps every route wraps this
one too, from outside: the size limits, the access log and the duration metric (``route`` is set in the
scope as the router would, so the metric names it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chit.core.paths import TOKEN_PATH


@dataclass(frozen=True)
class TokenRequestHead:
    """What the token endpoint reads of a request besides its body: first occurrences, as Starlette reads."""

    content_type: str | None
    authorization: str | None
    request_id: str | None
    source: str


@dataclass(frozen=True)
class _Route:
    path: str  # what the duration metric reads (``path_format`` or ``path``)


ROUTE = _Route(TOKEN_PATH)
NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class TokenReply:
    """A token response (RFC 6749 §5.1), sent as its two ASGI messages: the JSON as Starlette's
    ``JSONResponse`` writes it, never stored by a cache, with the request's id."""

    __slots__ = ("body", "request_id")

    def __init__(self, payload: dict[str, Any], request_id: str) -> None:
        self.body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
            *NO_STORE,
            (b"x-request-id", self.request_id.encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


Answer = Callable[[bytes, TokenRequestHead], Awaitable[Response | TokenReply]]
ErrorAnswer = Callable[[Scope, Exception], Awaitable[Response]]


class TokenRoute:
    """``answer(body, head)`` for ``POST`` on the token path; ``on_error(scope, exc)`` renders what it
    raises, as the app's exception handlers would."""

    def __init__(self, app: ASGIApp, answer: Answer, on_error: ErrorAnswer) -> None:
        self.app = app
        self.answer = answer
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TOKEN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        body = await _body(receive)
        if body is None:
            return  # the client went away before its body arrived: nobody to answer
        try:
            response = await self.answer(body, _head(scope))
        except Exception as exc:  # rendered as on any other route: an OAuth2 error, a 503, a 500
            response = await self.on_error(scope, exc)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _head(scope: Scope) -> TokenRequestHead:
    content_type = authorization = request_id = None
    for key, value in scope["headers"]:
        if key == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif key == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif key == b"x-request-id" and request_id is None:
            request_id = value.decode("latin-1")
    client = scope.get("client")
    return TokenRequestHead(content_type, authorization, request_id, client[0] if client else "unknown")
