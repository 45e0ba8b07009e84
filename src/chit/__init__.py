"""chit: authorization for Python microservices that travels with the request.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from chit.errors import (
    AuthError,
    ChitError,
    InsufficientScopeError,
    InvalidTokenError,
    OAuth2Error,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ChitError",
    "InsufficientScopeError",
    "InvalidTokenError",
    "OAuth2Error",
    "__version__",
]
