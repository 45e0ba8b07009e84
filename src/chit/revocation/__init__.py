"""Revocation as a service sees it: what the verifier asks (``RevocationCheck``) and the lists that answer.

``base`` holds the protocol and the feed's event (``RevocationEvent``), ``list`` the local list a
service keeps from the auth server's feed (``RevocationList``), ``memory`` a list filled by hand. The
follower that feeds the list over HTTP and Redis is the SDK's (``chit.sdk.revocation_feed``). This
layer sits under the SDK: it imports no web framework, database or server code. On the auth server,
``chit.server.revocations`` is the one place that revokes anything.
"""

from chit.revocation.base import (
    RevocationCheck,
    RevocationEvent,
    RevocationKind,
    TokenRevocationCheck,
    as_revocation_check,
)
from chit.revocation.list import RevocationList
from chit.revocation.memory import RevokedTokens

__all__ = [
    "RevocationCheck",
    "RevocationEvent",
    "RevocationKind",
    "RevocationList",
    "RevokedTokens",
    "TokenRevocationCheck",
    "as_revocation_check",
]
