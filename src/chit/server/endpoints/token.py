"""The token endpoint (RFC 6749 §3.2): client authentication, then the grant the request names.

Every request that names a client leaves an audit event: ``token.issued`` or ``token.refused``.
"""

from __future__ import annotations

from typing import Any

from chit.errors import (
    InvalidClientError,
    InvalidRequestError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from chit.server.audit import FAILURE, SUCCESS, AuditEvent
from chit.server.authserver import AuthServer
from chit.server.client_auth import authenticate_client
from chit.server.forms import check_content_type, parse_form
from chit.server.grants.base import Grant, TokenRequest
from chit.server.grants.client_credentials import ClientCredentialsGrant
from chit.server.grants.password import PasswordGrant
from chit.server.grants.refresh_token import RefreshTokenGrant
from chit.server.grants.token_exchange import GRANT_TYPE as TOKEN_EXCHANGE
from chit.server.grants.token_exchange import TokenExchangeGrant

GRANTS: tuple[type[Grant], ...] = (ClientCredentialsGrant, PasswordGrant, RefreshTokenGrant, TokenExchangeGrant)
KNOWN_GRANT_TYPES = frozenset({*(g.grant_type for g in GRANTS), TOKEN_EXCHANGE})


class TokenEndpoint:
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.grants: dict[str, Grant] = {g.grant_type: g(server) for g in GRANTS}

    @property
    def grant_types(self) -> list[str]:
        return sorted(self.grants)

    def handle(
        self, body: bytes, *, content_type: str | None, authorization: str | None, source: str, request_id: str = ""
    ) -> dict[str, Any]:
        check_content_type(content_type)
        params = parse_form(body)
        grant_type = params.get("grant_type")
        if grant_type is None:
            raise InvalidRequestError("missing parameter grant_type")
        try:
            client = authenticate_client(self.server.store, params, authorization)
        except InvalidClientError as exc:
            self.server.audit.record(
                AuditEvent(
                    "token.refused",
                    FAILURE,
                    source=source,
                    request_id=request_id,
                    detail={"grant_type": grant_type[:80], "error": exc.error},
                )
            )
            raise
        request = TokenRequest(params, client, source, request_id)
        try:
            grant = self.grants.get(grant_type)
            if grant is None:
                raise UnsupportedGrantTypeError(f"grant type {grant_type[:80]!r} is not supported")
            if grant_type not in client.grant_types:
                raise UnauthorizedClientError(f"client {client.client_id!r} may not use the {grant_type} grant")
            issued = grant.issue(request)
        except OAuth2Error as exc:
            request.event("token.refused", FAILURE, detail={"grant_type": grant_type[:80], "error": exc.error})
            self.server.audit.record(*request.events)
            raise
        claims = issued.access.claims
        request.event(
            "token.issued",
            SUCCESS,
            subject=claims.sub,
            token_id=claims.jti,
            detail={"grant_type": grant_type, "scope": " ".join(claims.scope), "session": claims.sid},
        )
        self.server.audit.record(*request.events)
        return issued.response()
