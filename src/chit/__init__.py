"""chit: authorization for Python microservices that travels with the request.

The public API is what ``__all__`` lists; everything else is internal and may change. The service
SDK's names (``Verifier``, ``ServiceIdentity``, ``attenuate``, ``ChitForwarder``, ``ServiceKey``) are imported on first
use, so that ``import chit`` (and the ``chit`` command) does not load the web framework.
"""

from typing import TYPE_CHECKING, Any

from chit.errors import (
    AuthError,
    ChitError,
    InsufficientScopeError,
    InvalidTokenError,
    OAuth2Error,
)
from chit.policy.principals import Actor, Principal

if TYPE_CHECKING:
    from chit.sdk.chits import ChitForwarder, ServiceKey, attenuate
    from chit.sdk.fastapi import Verifier
    from chit.sdk.identity import ServiceIdentity

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AuthError",
    "ChitError",
    "ChitForwarder",
    "InsufficientScopeError",
    "InvalidTokenError",
    "OAuth2Error",
    "Principal",
    "ServiceIdentity",
    "ServiceKey",
    "Verifier",
    "__version__",
    "attenuate",
]

_FROM_SDK = ("ChitForwarder", "ServiceIdentity", "ServiceKey", "Verifier", "attenuate")


def __getattr__(name: str) -> Any:
    if name not in _FROM_SDK:
        raise AttributeError(f"module 'chit' has no attribute {name!r}")
    import chit.sdk  # Verifier without FastAPI: an ImportError naming the extra to install

    value = getattr(chit.sdk, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
