"""Who is calling the admin API: a bearer access token issued by this server, for the ``chit`` audience.

Answers per RFC 6750: 401 ``invalid_token`` with ``WWW-Authenticate: Bearer``, 403 ``insufficient_scope``.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from fastapi import Request

from chit.errors import ChitError, InvalidTokenError
from chit.policy.permissions import CHIT_SERVICE
from chit.server.administration import REFUSED, Actor
from chit.server.audit import FAILURE, AuditEvent, AuditWriteError, request_id_from
from chit.server.authserver import AuthServer
from chit.server.grants.base import parse_permissions

log = logging.getLogger("chit.admin")


class MissingTokenError(InvalidTokenError):
    """No credentials at all: RFC 6750 §3.1 answers a bare ``WWW-Authenticate: Bearer``."""


def bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise MissingTokenError("no bearer token")
    if len(values) > 1:
        raise InvalidTokenError("more than one Authorization header")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidTokenError("expected Authorization: Bearer <token>")
    return token.strip()


def actor_from(server: AuthServer, request: Request) -> Actor:
    claims = server.verify_active_access_token(bearer_token(request))
    if claims is None:
        raise InvalidTokenError("the token is invalid, expired or revoked")
    if CHIT_SERVICE not in claims.aud:
        raise InvalidTokenError("the token is not meant for the auth server")
    return Actor(
        subject=claims.sub,
        permissions=parse_permissions(claims.scope),
        client_id=claims.client_id,
        source=request.client.host if request.client else None,
        request_id=request_id_from(request.headers.get("x-request-id")),
    )


async def audit_refusal(request: Request, status: int, error: str, reason: str, exc: Exception | None = None) -> None:
    """Audit an admin API refusal that ``Administration`` did not record itself (a bad or missing
    token, a malformed body, an unknown route): every refusal leaves a trace, with whoever asked."""
    if status < 400 or not request.url.path.startswith("/admin") or getattr(exc, "audited", False):
        return
    server: AuthServer = request.app.state.auth_server
    actor: Actor | None = getattr(request.state, "admin_actor", None)
    if actor is None and "authorization" in request.headers:
        # refused before the route's dependencies ran (e.g. a body that is not JSON): still say who asked
        try:
            actor = await anyio.to_thread.run_sync(actor_from, server, request)
        except ChitError:
            actor = None
    event = AuditEvent(
        REFUSED,
        FAILURE,
        client_id=actor.client_id if actor else None,
        actors=(actor.subject,) if actor else (),
        source=request.client.host if request.client else None,
        request_id=request_id_from(request.headers.get("x-request-id")),
        detail={
            "operation": f"{request.method} {request.url.path}"[:200],
            "status": status,
            "error": error,
            "reason": reason[:500],
        },
    )
    try:
        await server.audit.record_async(event)
    except AuditWriteError:
        log.error("could not audit a refused admin request to %s", request.url.path)
