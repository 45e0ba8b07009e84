"""The verified-token cache of a service's verifier (``chit.core.token_cache``, shared with the auth
server). A cached chit keeps its parsed, verified ``Biscuit``: its checks still run per request, with
that request's facts; the verifier asks its revocation check on every hit."""

from chit.core.token_cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, VerifiedTokenCache

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "VerifiedTokenCache"]
