"""Token introspection (RFC 7662) for authenticated confidential clients.

An active access token answers its claims; a refresh token is active only to the client it was
issued to. A chit is active unless it is expired (by any block's expiry, an attenuated ``ttl`` included),
any of its blocks' revocation ids is revoked, or its session, subject, client or an actor is not (as for an
access token); it answers the members of an access token (``aud``: the services its rights name; ``iat``
estimated, ``jti`` its revocation id's start, as ``ActiveChit`` says), ``exp`` that earliest expiry,
``act`` from its actor facts, and ``chit_revocation_ids``, one per block. The scope is what the authority
block grants: an appended block's other checks (operations, service, path...) need the request they
restrict, so a chit with more than one id can do less than its scope says. Anything inactive, unknown,
malformed or foreign answers exactly ``{"active": false}``.
"""

from __future__ import annotations

from typing import Any

from chit.errors import InvalidRequestError
from chit.server.authserver import AuthServer
from chit.server.client_auth import authenticate_client
from chit.server.credentials import hash_secret
from chit.server.forms import check_content_type, parse_form
from chit.storage.records import Client

INACTIVE: dict[str, Any] = {"active": False}


class IntrospectionEndpoint:
    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def handle(self, body: bytes, *, content_type: str | None, authorization: str | None) -> dict[str, Any]:
        check_content_type(content_type)
        params = parse_form(body)
        client = authenticate_client(self.server.store, params, authorization, allow_public=False)
        token = params.get("token")
        if token is None:
            raise InvalidRequestError("missing parameter token")
        if params.get("token_type_hint") == "refresh_token" or token.count(".") != 2:
            return (
                self._refresh_token(token, client) or self._chit(token) or self._access_token(token) or dict(INACTIVE)
            )
        return self._access_token(token) or self._refresh_token(token, client) or dict(INACTIVE)

    def _access_token(self, token: str) -> dict[str, Any] | None:
        claims = self.server.verify_active_access_token(token)
        if claims is None:
            return None
        answer: dict[str, Any] = {"active": True, **claims.to_dict(), "token_type": "Bearer"}
        answer.pop("sid", None)
        return answer

    def _chit(self, token: str) -> dict[str, Any] | None:
        active = self.server.active_chit(token)
        if active is None:
            return None
        claims = active.claims
        answer: dict[str, Any] = {
            "active": True,
            "sub": claims.sub,
            "client_id": claims.client_id,
            "scope": " ".join(claims.scope),
            "exp": claims.exp,
            "iat": claims.iat,
            "iss": claims.iss,
            "aud": list(claims.aud),
            "jti": claims.jti,
            "token_type": "Bearer",
            "chit_revocation_ids": list(active.authority.revocation_ids),
        }
        if claims.act is not None:
            answer["act"] = claims.act
        return answer

    def _refresh_token(self, token: str, client: Client) -> dict[str, Any] | None:
        record = self.server.store.find_refresh(hash_secret(token))
        now = self.server.now()
        if (
            record is None
            or record.client_pk != client.id
            or record.used_at is not None
            or record.family_revoked_at is not None
            or min(record.expires_at, record.family_expires_at) <= now
        ):
            return None
        user = self.server.store.user_by_id(record.user_id)
        if user is None or user.disabled or record.issued_at < user.revoked_before:
            return None
        return {
            "active": True,
            "client_id": client.client_id,
            "sub": record.user_id,
            "scope": " ".join(sorted(record.family_scope)),
            "exp": min(record.expires_at, record.family_expires_at),
            "iat": record.issued_at,
        }
