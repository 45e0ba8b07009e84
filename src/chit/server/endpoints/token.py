"""The token endpoint (RFC 6749 §3.2): client authentication, then the grant the request names.

Every request that names a client leaves an audit event: ``token.issued`` (for a chit, with ``format``
``chit`` and its authority block's ``revocation_ids``) or ``token.refused``;
except when the database stays locked by another session: that is no refusal of the client but
``DatabaseBusyError``, which goes up unaudited so that the caller can answer 503 (Retry-After) or,
for a grant that ran on the event loop, redo the request in a thread.

Every outcome but that one also counts, once decided, in ``chit_tokens_issued_total`` or
``chit_tokens_refused_total`` (``chit.server.metrics``), by the grant type sent: one chit knows, else
``other``; a request without a form or a grant type is refused as ``other`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chit.errors import (
    DatabaseBusyError,
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
from chit.server.grants.base import Grant, IssuedHandle, TokenRequest
from chit.server.grants.client_credentials import ClientCredentialsGrant
from chit.server.grants.password import PasswordGrant
from chit.server.grants.refresh_token import RefreshTokenGrant
from chit.server.grants.token_exchange import (
    GRANT_TYPE,
    TokenExchangeGrant,
    exchange_runs_inline,
)
from chit.server.metrics import OTHER, grants_known, token_issued, token_refused

GRANTS: tuple[type[Grant], ...] = (ClientCredentialsGrant, PasswordGrant, RefreshTokenGrant, TokenExchangeGrant)
KNOWN_GRANT_TYPES = frozenset(g.grant_type for g in GRANTS)


def grant_label(grant_type: str) -> str:
    """The grant type as a metric label: a client sends any string, the metrics hold a known few."""
    return grant_type if grant_type in KNOWN_GRANT_TYPES else OTHER


class TokenEndpoint:
    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.grants: dict[str, Grant] = {g.grant_type: g(server) for g in GRANTS}
        grants_known(self.grants)

    @staticmethod
    def runs_inline(grant_type: str, params: Mapping[str, str]) -> bool:
        """Whether the request may run on an event loop (see app.py): it only reads, without ever waiting
        for a lock there."""
        return grant_type == "client_credentials" or (grant_type == GRANT_TYPE and exchange_runs_inline(params))

    @property
    def grant_types(self) -> list[str]:
        return sorted(self.grants)

    def parse(self, body: bytes, content_type: str | None) -> tuple[dict[str, str], str]:
        """The form and its grant type: cheap, pure work, done before any thread or database."""
        try:
            check_content_type(content_type)
            params = parse_form(body)
            grant_type = params.get("grant_type")
            if grant_type is None:
                raise InvalidRequestError("missing parameter grant_type")
        except OAuth2Error as exc:
            token_refused(OTHER, exc.error)  # no form, or no grant type in it
            raise
        return params, grant_type

    def issue(
        self, params: dict[str, str], grant_type: str, *, authorization: str | None, source: str, request_id: str = ""
    ) -> TokenOutcome:
        """Authenticate the client and run the grant; the caller records ``events`` before answering.

        Raises ``DatabaseBusyError`` when a database lock was held too long (on an event loop: at all).
        """
        if not self.runs_inline(grant_type, params):
            return self._issue(params, grant_type, authorization=authorization, source=source, request_id=request_id)
        with self.server.store.shared_reads():  # the few reads of a cheap grant share one connection
            return self._issue(params, grant_type, authorization=authorization, source=source, request_id=request_id)

    def _issue(
        self, params: dict[str, str], grant_type: str, *, authorization: str | None, source: str, request_id: str
    ) -> TokenOutcome:
        try:
            client = authenticate_client(self.server.store, params, authorization)
        except InvalidClientError as exc:
            refused = AuditEvent(
                "token.refused",
                FAILURE,
                source=source,
                request_id=request_id,
                detail={"grant_type": grant_type[:80], "error": exc.error},
            )
            token_refused(grant_label(grant_type), exc.error)
            return TokenOutcome(None, exc, [refused])
        request = TokenRequest(params, client, source, request_id)
        try:
            grant = self.grants.get(grant_type)
            if grant is None:
                raise UnsupportedGrantTypeError(f"grant type {grant_type[:80]!r} is not supported")
            if grant_type not in client.grant_types:
                raise UnauthorizedClientError(f"client {client.client_id!r} may not use the {grant_type} grant")
            issued = grant.issue(request)
        except DatabaseBusyError:
            raise  # not the client's fault: nothing to audit, the caller answers 503 or retries in a thread
        except OAuth2Error as exc:
            context = request.context
            request.event(
                "token.refused",
                FAILURE,
                subject=context.subject,
                actors=context.actors,
                detail={**context.detail, "grant_type": grant_type[:80], "error": exc.error},
            )
            token_refused(grant_label(grant_type), exc.error)
            return TokenOutcome(None, exc, request.events)
        context = request.context
        detail = dict(context.detail)
        if isinstance(issued, IssuedHandle):
            subject, token_id, scope, session = issued.subject, issued.id, issued.scope, None
        else:
            claims = issued.access.claims
            subject, token_id, scope, session = claims.sub, claims.jti, claims.scope, claims.sid
            if issued.access.is_chit:  # what revoking the chit (or its session) has to find
                detail.update(format="chit", revocation_ids=[issued.access.revocation_ids[0]])
        request.event(
            "token.issued",
            SUCCESS,
            subject=subject,
            actors=context.actors,
            token_id=token_id,
            detail={**detail, "grant_type": grant_type, "scope": " ".join(scope), "session": session},
        )
        token_issued(grant_type)  # a grant that issued is a known one
        return TokenOutcome(issued.response(), None, request.events)


@dataclass
class TokenOutcome:
    body: dict[str, Any] | None
    error: OAuth2Error | None
    events: list[AuditEvent]

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        assert self.body is not None
        return self.body
