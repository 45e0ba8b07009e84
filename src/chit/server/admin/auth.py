"""Who is calling the admin API: a bearer access token issued by this server, for the ``chit`` audience.

Answers per RFC 6750: 401 ``invalid_token`` with ``WWW-Authenticate: Bearer``, 403 ``insufficient_scope``.
"""

from __future__ import annotations

from fastapi import Request

from chit.errors import InvalidTokenError
from chit.policy.permissions import CHIT_SERVICE
from chit.server.administration import Actor
from chit.server.audit import request_id_from
from chit.server.authserver import AuthServer
from chit.server.grants.base import parse_permissions


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
