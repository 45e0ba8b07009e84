"""What the verifier asks about revocation, per request, before it accepts a token.

The revocation lists (in-memory, the feed follower, Redis pub/sub) implement this protocol; the
verifier consults it on every request, cached tokens included, so it must answer from memory and
never block.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

# What a revocation concerns, as the feed names it (DESIGN §4, "Revocation feed"): one access token
# (``jti``); a session (a refresh-token family ``rtf_…`` or an API key ``key_…``) and every token from
# it; everything of a subject or a client before a point in time; a chit and its attenuations; a
# signing key and every token it signed; a deferred delegation.
RevocationKind = Literal["token", "session", "subject", "client", "chit", "key", "delegation"]


@runtime_checkable
class RevocationCheck(Protocol):
    def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        """Whether the token ``token_id`` (its ``jti``) or its session (its ``sid``: the refresh-token
        family ``rtf_…`` or the API key ``key_…`` it came from) has been revoked."""
        ...
