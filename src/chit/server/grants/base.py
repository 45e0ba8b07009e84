"""What every grant shares: the request it handles, the response it builds, and the scope it asks for.

The scope arithmetic itself is ``chit.policy.scopes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from chit.errors import InvalidRequestError
from chit.policy.permissions import Permission
from chit.policy.scopes import parse_scope
from chit.server.audit import AuditEvent
from chit.server.authserver import AuthServer, IssuedAccessToken
from chit.server.forms import split_scope
from chit.storage.records import Client


@dataclass
class RequestContext:
    """Who a token request concerns beyond its client, for its audit event, even when it is refused."""

    subject: str | None = None
    actors: tuple[str, ...] = ()  # the delegation chain of the token asked for, current actor first
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRequest:
    params: Mapping[str, str]
    client: Client
    source: str  # the caller's address, for brute-force limits
    request_id: str = ""
    # events a grant records besides the endpoint's own issued/refused event (e.g. a failed login)
    events: list[AuditEvent] = field(default_factory=list)
    # what the endpoint's issued/refused event names, as the grant learns it: the delegation chain, a job id
    context: RequestContext = field(default_factory=RequestContext)

    def event(self, type: str, outcome: str, **values: Any) -> None:
        self.events.append(
            AuditEvent(
                type, outcome, client_id=self.client.client_id, source=self.source, request_id=self.request_id, **values
            )
        )

    def require(self, name: str) -> str:
        value = self.params.get(name)
        if value is None:
            raise InvalidRequestError(f"missing parameter {name}")
        return value


@dataclass(frozen=True)
class IssuedTokens:
    access: IssuedAccessToken
    refresh_token: str | None = None
    issued_token_type: str | None = None  # RFC 8693 §2.2.1, for exchanges

    def response(self) -> dict[str, Any]:
        """The token response (RFC 6749 §5.1, DESIGN §4)."""
        body: dict[str, Any] = {
            "access_token": self.access.token,
            "token_type": "Bearer",
            "expires_in": self.access.expires_in,
            "scope": " ".join(self.access.claims.scope),
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.issued_token_type is not None:
            body["issued_token_type"] = self.issued_token_type
        return body


@dataclass(frozen=True)
class IssuedHandle:
    """An opaque credential a token exchange answers instead of an access token (a deferred delegation)."""

    token: str
    id: str  # what the audit log names instead of the secret
    subject: str
    expires_in: int
    scope: tuple[str, ...]
    issued_token_type: str

    def response(self) -> dict[str, Any]:
        """RFC 8693 §2.2.1: ``token_type`` ``N_A``, the handle is no bearer access token."""
        return {
            "access_token": self.token,
            "issued_token_type": self.issued_token_type,
            "token_type": "N_A",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scope),
        }


class Grant(Protocol):
    grant_type: ClassVar[str]

    def __init__(self, server: AuthServer) -> None: ...

    def issue(self, request: TokenRequest) -> IssuedTokens | IssuedHandle: ...


def requested_scope(params: Mapping[str, str]) -> frozenset[Permission] | None:
    """The permissions the request's ``scope`` parameter asks for (RFC 6749 §3.3), or None when absent."""
    return parse_scope(split_scope(params.get("scope")))
