"""The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

Every use rotates the refresh token. Presenting one that was already used revokes its whole family,
and with it every access token issued from the family (they carry its id as ``sid``). The new
access token carries the family's original scope ∩ the user's current permissions, optionally
narrowed by ``scope``. A refused refresh consumes nothing.
"""

from __future__ import annotations

from typing import ClassVar

from chit.errors import InvalidGrantError, InvalidScopeError
from chit.policy.permissions import covers_all, format_scope, intersect
from chit.policy.scopes import client_cap, parse_permissions, select_scope
from chit.server.authserver import AuthServer
from chit.server.credentials import hash_secret, new_secret
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope
from chit.server.revocations import REUSE, ClientRequest


class RefreshTokenGrant:
    grant_type: ClassVar[str] = "refresh_token"

    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def _reuse(self, request: TokenRequest, family_id: str, user_id: str) -> None:
        # audited (refresh.reuse_detected) here, at once; the token endpoint then records the refusal
        by = ClientRequest(request.client.client_id, request.source, request.request_id)
        self.server.revocations.revoke_session(family_id, subject=user_id, by=by, reason=REUSE)

    def issue(self, request: TokenRequest) -> IssuedTokens:
        presented = request.require("refresh_token")
        wanted = requested_scope(request.params)
        server, store = self.server, self.server.store
        now = server.now()
        token_hash = hash_secret(presented)
        record = store.find_refresh(token_hash)
        if record is None or record.client_pk != request.client.id:
            raise InvalidGrantError("refresh token is invalid")
        if record.family_revoked_at is not None:
            raise InvalidGrantError("refresh token was revoked")
        if record.used_at is not None:
            self._reuse(request, record.family_id, record.user_id)
            raise InvalidGrantError("refresh token was already used; its session is revoked")
        if record.expires_at <= now or record.family_expires_at <= now:
            raise InvalidGrantError("refresh token has expired")
        user = store.user_by_id(record.user_id)
        if user is None or user.disabled or record.issued_at < user.revoked_before:
            # issued before the user was disabled: re-enabling revives nothing
            raise InvalidGrantError("refresh token is invalid")

        family_scope = parse_permissions(record.family_scope)
        if wanted is not None:
            beyond = covers_all(family_scope, wanted)
            if beyond:
                raise InvalidScopeError(f"a refresh cannot widen the scope: {format_scope(beyond)}")
        current = intersect(parse_permissions(store.permissions_of(user.id)), client_cap(request.client.scope))
        granted = select_scope(intersect(family_scope, current), wanted)

        new_token = new_secret()
        if not store.rotate_refresh(
            token_hash,
            hash_secret(new_token),
            now=now,
            idle_expires_at=now + server.settings.refresh_idle_ttl,
        ):
            # another request rotated it between our read and our write: that is a reuse
            self._reuse(request, record.family_id, record.user_id)
            raise InvalidGrantError("refresh token was already used; its session is revoked")
        issued = server.issue_access_token(
            subject=user.id, client=request.client, permissions=granted, session_id=record.family_id
        )
        return IssuedTokens(issued, new_token)
