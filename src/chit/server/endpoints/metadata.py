"""Authorization server metadata (RFC 8414), also served at the OpenID discovery path.

The ``issuer`` is the configured value, never derived from Host or X-Forwarded-* headers.
"""

from __future__ import annotations

from typing import Any

from chit.core.paths import INTROSPECTION_PATH, JWKS_PATH, REVOCATION_PATH, TOKEN_PATH
from chit.server.authserver import AuthServer
from chit.server.client_auth import AUTH_METHODS
from chit.server.endpoints.token import TokenEndpoint


def server_metadata(server: AuthServer, token_endpoint: TokenEndpoint) -> dict[str, Any]:
    issuer = server.settings.issuer
    keys = server.keys()
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "grant_types_supported": token_endpoint.grant_types,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "biscuit_public_keys": list(keys.biscuit_public_keys),
    }
