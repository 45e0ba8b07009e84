"""The service SDK: verify chit access tokens locally, decide, and call other services.

``Verifier`` (FastAPI dependency and OAuth2 scheme) and ``TokenVerifier`` (framework-free) check
tokens; ``BearerAuthMiddleware`` serves any ASGI framework; ``ServiceIdentity`` and ``ForwardedToken``
authenticate outbound httpx calls; ``chit.sdk.context`` holds the current request's principal.
"""

from chit.sdk.cache import VerifiedTokenCache
from chit.sdk.context import RequestAuth, authenticated, current_auth, current_principal, current_token
from chit.sdk.decisions import DecisionLog
from chit.sdk.fastapi import Verifier, auth_error_handler
from chit.sdk.identity import ForwardedToken, ServiceIdentity, ServiceToken, TokenRequestError
from chit.sdk.jwks_client import JwksClient, KeysUnavailableError
from chit.sdk.revocation import RevocationCheck, RevokedTokens
from chit.sdk.starlette import BearerAuthMiddleware, principal_of
from chit.sdk.verifier import (
    InvalidBearerRequestError,
    MissingTokenError,
    TokenVerifier,
    VerifierOptions,
    bearer_token,
    challenge,
)

__all__ = [
    "BearerAuthMiddleware",
    "DecisionLog",
    "ForwardedToken",
    "InvalidBearerRequestError",
    "JwksClient",
    "KeysUnavailableError",
    "MissingTokenError",
    "RequestAuth",
    "RevocationCheck",
    "RevokedTokens",
    "ServiceIdentity",
    "ServiceToken",
    "TokenRequestError",
    "TokenVerifier",
    "VerifiedTokenCache",
    "Verifier",
    "VerifierOptions",
    "auth_error_handler",
    "authenticated",
    "bearer_token",
    "challenge",
    "current_auth",
    "current_principal",
    "current_token",
    "principal_of",
]
