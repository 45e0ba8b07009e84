"""The service SDK: verify chit access tokens locally, decide, and call other services.

``Verifier`` (FastAPI dependency and OAuth2 scheme) and ``TokenVerifier`` (framework-free) check
tokens, JWTs and chits alike; ``BearerAuthMiddleware`` serves any ASGI framework; ``ServiceIdentity``,
``ForwardedToken`` and ``ChitForwarder`` (the request's chit, attenuated: ``attenuate``; signed with the
service's ``ServiceKey`` as proof of the path) authenticate outbound httpx calls; ``chit.sdk.context``
holds the current request's principal. Given the service's identity, a verifier follows the auth
server's revocation feed (``RevocationFeed``) into a ``RevocationList`` and, while that list is stale,
refuses writes with ``RevocationsStaleError`` (503); ``metrics_app`` serves its Prometheus metrics.

The framework adapters' names (``Verifier``, ``auth_error_handler``, ``BearerAuthMiddleware``,
``principal_of``) are imported on first use, so that a service without FastAPI or Starlette
(``pip install chit``) imports everything else; asking for one of them without its framework raises
an ``ImportError`` that says which extra to install.
"""

from typing import TYPE_CHECKING, Any

from chit.core.chit_authorizer import ChitLimits
from chit.errors import RevocationsStaleError
from chit.sdk.cache import VerifiedTokenCache
from chit.sdk.chits import ChitForwarder, ServiceKey, attenuate
from chit.sdk.context import RequestAuth, authenticated, current_auth, current_principal, current_token
from chit.sdk.decisions import DecisionLog
from chit.sdk.delegation import ExchangedToken
from chit.sdk.identity import ForwardedToken, ServiceIdentity, ServiceToken, TokenRequestError
from chit.sdk.jwks_client import JwksClient, KeysUnavailableError, RootKeysClient, ServiceKeysClient
from chit.sdk.metrics import metrics_app
from chit.sdk.revocation import RevocationCheck, RevocationList, RevokedTokens
from chit.sdk.revocation_feed import RevocationFeed
from chit.sdk.verifier import (
    InvalidBearerRequestError,
    MissingTokenError,
    TokenVerifier,
    VerifierOptions,
    bearer_token,
    challenge,
)

if TYPE_CHECKING:
    from chit.sdk.fastapi import Verifier, auth_error_handler
    from chit.sdk.starlette import BearerAuthMiddleware, principal_of

__all__ = [
    "BearerAuthMiddleware",
    "ChitForwarder",
    "ChitLimits",
    "DecisionLog",
    "ExchangedToken",
    "ForwardedToken",
    "InvalidBearerRequestError",
    "JwksClient",
    "KeysUnavailableError",
    "MissingTokenError",
    "RequestAuth",
    "RevocationCheck",
    "RevocationFeed",
    "RevocationList",
    "RevocationsStaleError",
    "RevokedTokens",
    "RootKeysClient",
    "ServiceIdentity",
    "ServiceKey",
    "ServiceKeysClient",
    "ServiceToken",
    "TokenRequestError",
    "TokenVerifier",
    "VerifiedTokenCache",
    "Verifier",
    "VerifierOptions",
    "attenuate",
    "auth_error_handler",
    "authenticated",
    "bearer_token",
    "challenge",
    "current_auth",
    "current_principal",
    "current_token",
    "metrics_app",
    "principal_of",
]

_ADAPTERS = {
    "BearerAuthMiddleware": "chit.sdk.starlette",
    "Verifier": "chit.sdk.fastapi",
    "auth_error_handler": "chit.sdk.fastapi",
    "principal_of": "chit.sdk.starlette",
}
_FRAMEWORKS = {"fastapi": "FastAPI", "starlette": "Starlette"}


def __getattr__(name: str) -> Any:
    module = _ADAPTERS.get(name)
    if module is None:
        raise AttributeError(f"module 'chit.sdk' has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        framework = _FRAMEWORKS.get((exc.name or "").partition(".")[0])
        if framework is None:
            raise
        raise ImportError(
            f'{name} needs {framework}, which is not installed: pip install "chit[fastapi]"',
            name=exc.name,
        ) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
