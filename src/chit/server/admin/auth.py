"""Who is calling the admin API: a bearer access token issued by this server, for the ``chit`` audience.

The bearer token is read as every chit service reads it (``chit.answers.bearer_token``) and refusals are
answered per RFC 6750 (``chit.answers``): no credentials 401 with a bare ``WWW-Authenticate: Bearer``,
two ``Authorization`` headers or an empty or malformed bearer value 400 ``invalid_request``, a bad
token 401 ``invalid_token``, a missing permission 403 ``insufficient_scope``.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from fastapi import Request

from chit.answers import bearer_token
from chit.errors import ChitError, InvalidTokenError
from chit.policy.delegation import names
from chit.policy.permissions import CHIT_SERVICE
from chit.policy.principals import actors_from_claim
from chit.policy.scopes import parse_permissions
from chit.server.administration import REFUSED, Caller
from chit.server.audit import FAILURE, AuditEvent, AuditWriteError, request_id_from
from chit.server.authserver import AuthServer

log = logging.getLogger("chit.admin")


def actor_from(server: AuthServer, request: Request) -> Caller:
    claims = server.verify_active_access_token(bearer_token(request.headers.getlist("authorization")))
    if claims is None:
        raise InvalidTokenError("the token is invalid, expired or revoked")
    if CHIT_SERVICE not in claims.aud:
        raise InvalidTokenError("the token is not meant for the auth server")
    return Caller(
        subject=claims.sub,
        permissions=parse_permissions(claims.scope),
        client_id=claims.client_id,
        chain=names(actors_from_claim(claims.act)),
        source=request.client.host if request.client else None,
        request_id=request_id_from(request.headers.get("x-request-id")),
    )


async def audit_refusal(request: Request, status: int, error: str, reason: str, exc: Exception | None = None) -> None:
    """Audit an admin API refusal that ``Administration`` did not record itself (a bad or missing
    token, a malformed body, an unknown route): every refusal leaves a trace, with whoever asked."""
    if status < 400 or not request.url.path.startswith("/admin") or getattr(exc, "audited", False):
        return
    server: AuthServer = request.app.state.auth_server
    looked = hasattr(request.state, "admin_actor")
    actor: Caller | None = getattr(request.state, "admin_actor", None)
    if not looked and "authorization" in request.headers:
        # refused before the route's dependencies ran (e.g. a body that is not JSON): still say who asked
        try:
            actor = await anyio.to_thread.run_sync(actor_from, server, request)
        except ChitError:
            actor = None
    event = AuditEvent(
        REFUSED,
        FAILURE,
        client_id=actor.client_id if actor else None,
        actors=actor.actors if actor else (),
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
