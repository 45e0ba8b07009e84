"""The auth server's paths on the wire, relative to the issuer: served by ``chit.server.app``,
advertised by its metadata (RFC 8414), and read by the SDK and ``chit.testing``."""

from __future__ import annotations

TOKEN_PATH = "/oauth2/token"  # RFC 6749 §3.2
INTROSPECTION_PATH = "/oauth2/introspect"  # RFC 7662
REVOCATION_PATH = "/oauth2/revoke"  # RFC 7009
JWKS_PATH = "/.well-known/jwks.json"  # RFC 7517
SERVICE_KEYS_PATH = "/.well-known/chit-service-keys"  # services' public keys (DESIGN §4, service_keys_uri)
OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"  # what the SDK reads
AUTHORIZATION_SERVER_METADATA_PATH = "/.well-known/oauth-authorization-server"  # RFC 8414 §3
DISCOVERY_PATHS = (AUTHORIZATION_SERVER_METADATA_PATH, OPENID_CONFIGURATION_PATH)  # the same document at both
REVOCATION_FEED_PATH = "/oauth2/revocations"  # the revocation feed, by cursor (DESIGN §4)
REVOCATION_STREAM_PATH = "/oauth2/revocations/stream"  # the same as server-sent events
