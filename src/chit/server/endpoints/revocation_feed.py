"""The revocation feed on the wire (DESIGN §4, "Revocation feed").

``GET /oauth2/revocations?after=<id>&limit=<n>`` answers ``{"events": [...], "cursor": <last id>}``: the
events after the cursor, oldest first, at most ``limit`` (1 to 1000, 1000 by default; fewer means the
reader has caught up), leaving out events whose tokens have all expired. ``cursor`` is the last id
answered, or ``after`` when there is none.

``GET /oauth2/revocations/stream`` is the same as server-sent events, from ``Last-Event-ID`` (or
``after``; 0 by default): each event is ``id: <id>``, ``event: revocation`` and ``data: <event>``, and a
``: keepalive`` comment marks every ``feed_heartbeat`` seconds of quiet, so a follower can tell a quiet
feed from a dead one. The stream ends when the token it was opened with expires: the follower
reconnects with a fresh one and its ``Last-Event-ID``, and loses nothing.

Both need a bearer access token of this server for the ``chit`` audience carrying
``chit:revocations:read`` (RFC 6750: no token 401 with a bare challenge, a bad one 401 ``invalid_token``,
a missing permission 403 ``insufficient_scope``); a bad ``after``, ``Last-Event-ID`` or ``limit`` is 400
``invalid_request``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from chit.answers import answer_to, bearer_token
from chit.core.claims import AccessTokenClaims
from chit.core.paths import REVOCATION_FEED_PATH, REVOCATION_STREAM_PATH
from chit.errors import ChitError, InsufficientScopeError, InvalidRequestError, InvalidTokenError
from chit.policy.permissions import CHIT_SERVICE, Permission, is_covered
from chit.policy.scopes import parse_permissions
from chit.server import metrics
from chit.server.authserver import AuthServer
from chit.server.feed import PAGE
from chit.server.grants.client_credentials import FEED_PERMISSION

_FEED = Permission.parse(FEED_PERMISSION)
_CURSOR = re.compile(r"[0-9]{1,19}\Z")
MAX_CURSOR = 2**63 - 1
NO_STORE = {"Cache-Control": "no-store"}
RECONNECT_MS = 1000  # the ``retry:`` a stream asks its follower to wait before reconnecting


def feed_reader(server: AuthServer, authorization: list[str]) -> AccessTokenClaims:
    """The claims of a token that may read the feed; an ``AuthError`` for anything else."""
    claims = server.verify_active_access_token(bearer_token(authorization))
    if claims is None:
        raise InvalidTokenError("the token is invalid, expired or revoked")
    if CHIT_SERVICE not in claims.aud:
        raise InvalidTokenError("the token is not meant for the auth server")
    if not is_covered(_FEED, parse_permissions(claims.scope)):
        raise InsufficientScopeError(f"reading the revocation feed takes {FEED_PERMISSION}")
    return claims


def cursor_of(value: str | None, name: str) -> int:
    """An event id to read after (0: from the start); ``InvalidRequestError`` naming ``name`` otherwise."""
    if value is None or value == "":
        return 0
    if not _CURSOR.match(value) or int(value) > MAX_CURSOR:
        raise InvalidRequestError(f"{name} must be an event id: a whole number from 0 to {MAX_CURSOR}")
    return int(value)


def limit_of(value: str | None) -> int:
    if value is None or value == "":
        return PAGE
    if not value.isdigit() or not 1 <= int(value) <= PAGE:
        raise InvalidRequestError(f"limit must be a whole number from 1 to {PAGE}")
    return int(value)


def _refused(error: ChitError) -> Response:
    answer = answer_to(error, [FEED_PERMISSION])
    return JSONResponse(answer.body(), status_code=answer.status, headers={**answer.headers, **NO_STORE})


def add_feed_routes(app: FastAPI, server: AuthServer) -> None:
    hub = server.feed

    @app.get(REVOCATION_FEED_PATH, tags=["revocation"], summary="The revocation feed, by cursor (chit)")
    async def revocation_feed(request: Request) -> Response:
        try:
            params = request.query_params
            after = cursor_of(params.get("after"), "after")
            limit = limit_of(params.get("limit"))
            await run_in_threadpool(feed_reader, server, request.headers.getlist("authorization"))
            events = await run_in_threadpool(hub.page, after, limit)
        except ChitError as exc:
            return _refused(exc)
        cursor = events[-1].id if events else after
        return JSONResponse({"events": [event.wire() for event in events], "cursor": cursor}, headers=NO_STORE)

    @app.get(REVOCATION_STREAM_PATH, tags=["revocation"], summary="The revocation feed as server-sent events (chit)")
    async def revocation_stream(request: Request) -> Response:
        try:
            resumed = request.headers.get("last-event-id")
            if resumed is not None:
                after = cursor_of(resumed.strip(), "Last-Event-ID")
            else:
                after = cursor_of(request.query_params.get("after"), "after")
            claims = await run_in_threadpool(feed_reader, server, request.headers.getlist("authorization"))
        except ChitError as exc:
            return _refused(exc)
        headers = {**NO_STORE, "X-Accel-Buffering": "no"}  # no proxy may hold events back
        return StreamingResponse(_events(server, after, claims.exp), media_type="text/event-stream", headers=headers)


async def _events(server: AuthServer, after: int, until: int) -> AsyncIterator[str]:
    metrics.feed_subscriber_opened()
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        async for event in server.feed.stream(after):
            if time.time() >= until:
                return  # the token it was opened with expired: reconnect with a fresh one
            if event is None:
                yield ": keepalive\n\n"
                continue
            metrics.feed_event_delivered(event.created_at / 1_000_000)
            yield f"id: {event.id}\nevent: revocation\ndata: {json.dumps(event.wire())}\n\n"
    finally:
        metrics.feed_subscriber_closed()
