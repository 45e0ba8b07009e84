"""Service keys (DESIGN §3.2, §4 "Chits on the wire"): the public key of every registered service.

Published like the JWKS, for anyone to fetch: a service that trusts the third-party block another one
appended to a chit (``trusting`` its key) looks the key up here. Discovery names it ``service_keys_uri``.
Answer: ``{"keys": [{"service": id, "public_key": "ed25519/<hex>"}]}``, by service id.
"""

from __future__ import annotations

from typing import Any

from chit.core.paths import SERVICE_KEYS_PATH as SERVICE_KEYS_PATH
from chit.server.authserver import AuthServer


def service_keys(server: AuthServer) -> dict[str, Any]:
    """The document served at ``SERVICE_KEYS_PATH`` (services without a key yet are left out)."""
    return {"keys": [{"service": s, "public_key": k} for s, k in server.store.service_public_keys()]}
