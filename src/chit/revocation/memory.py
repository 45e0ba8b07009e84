"""The in-process revocation list: enough for tests and for a single process."""

from __future__ import annotations


class RevokedTokens:
    """A plain in-memory revocation list (a ``RevocationCheck``)."""

    def __init__(self) -> None:
        self.token_ids: set[str] = set()
        self.session_ids: set[str] = set()

    def revoke_token(self, token_id: str) -> None:
        self.token_ids.add(token_id)

    def revoke_session(self, session_id: str) -> None:
        self.session_ids.add(session_id)

    def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        return token_id in self.token_ids or (session_id is not None and session_id in self.session_ids)
