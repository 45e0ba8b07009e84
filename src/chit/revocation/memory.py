"""The in-process revocation list filled by hand: enough for tests and for a single process.

A service that follows the auth server's feed uses ``chit.revocation.list.RevocationList`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chit.policy.principals import Principal


class RevokedTokens:
    """A plain in-memory revocation list (a ``RevocationCheck``): token ids (a JWT's ``jti``, or any
    revocation id of a chit's blocks) and sessions (``sid``), kept until the process ends."""

    def __init__(self) -> None:
        self.token_ids: set[str] = set()
        self.session_ids: set[str] = set()

    def revoke_token(self, token_id: str) -> None:
        self.token_ids.add(token_id)

    def revoke_session(self, session_id: str) -> None:
        self.session_ids.add(session_id)

    def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        return token_id in self.token_ids or (session_id is not None and session_id in self.session_ids)

    def revokes(self, principal: Principal) -> bool:
        if principal.chit is not None:
            # a chit is revoked with any block: revoking one revokes every chit attenuated from it
            return not self.token_ids.isdisjoint(principal.chit.revocation_ids)
        return self.is_revoked(principal.token_id, principal.session_id)
