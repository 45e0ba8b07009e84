"""The SDK's names for revocation, which lives in ``chit.revocation`` (a layer under the SDK)."""

from chit.revocation.base import RevocationCheck
from chit.revocation.memory import RevokedTokens

__all__ = ["RevocationCheck", "RevokedTokens"]
