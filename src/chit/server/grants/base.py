"""What every grant shares: the request it handles, the response it builds, and scope selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from chit.errors import InvalidPermissionError, InvalidRequestError, InvalidScopeError
from chit.policy.permissions import Permission, covers_all, format_scope, intersect
from chit.server.authserver import AuthServer, IssuedAccessToken
from chit.server.forms import split_scope
from chit.storage.records import Client


@dataclass(frozen=True)
class TokenRequest:
    params: Mapping[str, str]
    client: Client
    source: str  # the caller's address, for brute-force limits

    def require(self, name: str) -> str:
        value = self.params.get(name)
        if value is None:
            raise InvalidRequestError(f"missing parameter {name}")
        return value


class Grant(Protocol):
    grant_type: ClassVar[str]

    def __init__(self, server: AuthServer) -> None: ...

    def issue(self, request: TokenRequest) -> dict[str, Any]: ...


def token_response(issued: IssuedAccessToken, refresh_token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": " ".join(issued.claims.scope),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


def parse_permissions(texts: Iterable[str]) -> frozenset[Permission]:
    """Stored permissions; an unparsable one (from a hand-edited database) is ignored, never granted."""
    result = set()
    for text in texts:
        try:
            result.add(Permission.parse(text))
        except InvalidPermissionError:
            continue
    return frozenset(result)


def requested_scope(params: Mapping[str, str]) -> frozenset[Permission] | None:
    values = split_scope(params.get("scope"))
    if values is None:
        return None
    try:
        return frozenset(Permission.parse(v) for v in values)
    except InvalidPermissionError as exc:
        raise InvalidScopeError(str(exc)) from exc


def select_scope(
    available: frozenset[Permission], requested: frozenset[Permission] | None
) -> frozenset[Permission]:
    """Everything available when nothing is requested; else exactly what was asked, if all is covered."""
    if requested is None:
        return intersect(available, None)
    missing = covers_all(available, requested)
    if missing:
        raise InvalidScopeError(f"not granted: {format_scope(missing)}")
    return requested


def client_cap(client: Client) -> frozenset[Permission] | None:
    return None if client.scope is None else parse_permissions(client.scope)
