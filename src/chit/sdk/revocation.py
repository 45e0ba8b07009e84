"""What the verifier asks about revocation, per request, before it accepts a token.

The revocation feeds (in-process, SSE/poll, Redis pub/sub) implement this protocol; the verifier
consults it on every request, cached tokens included, so it must answer from memory and never block.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RevocationCheck(Protocol):
    def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        """Whether the token ``token_id`` (its ``jti``) or its session (its ``sid``: the refresh-token
        family ``rtf_…`` or the API key ``key_…`` it came from) has been revoked."""
        ...


class RevokedTokens:
    """A plain in-memory revocation list: enough for tests and for a single process."""

    def __init__(self) -> None:
        self.token_ids: set[str] = set()
        self.session_ids: set[str] = set()

    def revoke_token(self, token_id: str) -> None:
        self.token_ids.add(token_id)

    def revoke_session(self, session_id: str) -> None:
        self.session_ids.add(session_id)

    def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        return token_id in self.token_ids or (session_id is not None and session_id in self.session_ids)
