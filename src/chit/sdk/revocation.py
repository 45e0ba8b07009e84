"""The SDK's names for revocation, which lives in ``chit.revocation`` (a layer under the SDK)."""

from chit.revocation.base import RevocationCheck, RevocationEvent
from chit.revocation.list import RevocationList
from chit.revocation.memory import RevokedTokens

__all__ = ["RevocationCheck", "RevocationEvent", "RevocationList", "RevokedTokens"]
