"""Authorization server metadata (RFC 8414), also served at the OpenID discovery path.

The ``issuer`` is the configured value, never derived from Host or X-Forwarded-* headers.

Chits' root keys: ``biscuit_public_keys`` lists them newest first in biscuit's text form
``ed25519/<hex>`` (DESIGN §3.2); ``biscuit_root_keys`` (chit's own addition, no RFC names it) pairs each
with its root key id, ``[{"id": n, "public_key": "ed25519/<hex>"}]``, so that a verifier picks the key
that a chit's root key id names. Both list the key that mints and older ones whose chits may live on.
``service_keys_uri`` (DESIGN §4) names the services' public keys, with which a service checks who signed
a chit's third-party block.
"""

from __future__ import annotations

from typing import Any

from chit.core.paths import (
    INTROSPECTION_PATH,
    JWKS_PATH,
    REVOCATION_FEED_PATH,
    REVOCATION_PATH,
    REVOCATION_STREAM_PATH,
    SERVICE_KEYS_PATH,
    TOKEN_PATH,
)
from chit.server.authserver import AuthServer
from chit.server.client_auth import AUTH_METHODS
from chit.server.endpoints.token import TokenEndpoint


def server_metadata(server: AuthServer, token_endpoint: TokenEndpoint) -> dict[str, Any]:
    issuer = server.settings.issuer
    root_keys = server.keys().published_root_keys(server.now_datetime())
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
        "biscuit_public_keys": [key.public_key for key in root_keys],
        "biscuit_root_keys": [{"id": key.id, "public_key": key.public_key} for key in root_keys],
        "service_keys_uri": issuer + SERVICE_KEYS_PATH,
        "revocation_feed_endpoint": issuer + REVOCATION_FEED_PATH,
        "revocation_stream_endpoint": issuer + REVOCATION_STREAM_PATH,
    }
