"""Revocation as a service sees it: what the verifier asks (``RevocationCheck``) and the lists that answer.

``base`` holds the protocol, ``memory`` the in-process list; the feed follower and the Redis
subscriber (DESIGN §4, "Revocation feed") go here next. This layer sits under the SDK: it imports no
web framework, database or server code. On the auth server, ``chit.server.revocations`` is the one
place that revokes anything.
"""

from chit.revocation.base import RevocationCheck, RevocationKind
from chit.revocation.memory import RevokedTokens

__all__ = ["RevocationCheck", "RevocationKind", "RevokedTokens"]
