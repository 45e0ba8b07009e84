"""One error tree for chit.

OAuth2 errors carry the RFC code (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8693 §2.2.2) and the HTTP
status they answer with; the server maps them to responses in exactly one place
(``chit.server.responses``). Resource-server errors (RFC 6750 §3.1) are ``AuthError``s.
"""

from __future__ import annotations


class ChitError(Exception):
    """Base of every error chit raises on purpose."""


class ConfigurationError(ChitError):
    """The configuration or the data directory is unusable."""


class RefusedError(ChitError):
    """An operation that is well formed but not allowed (the CLI exits 1 with this reason)."""


class ConflictError(RefusedError):
    """The thing being created already exists."""


class NotFoundError(RefusedError):
    """The thing being named does not exist."""


class InvalidPermissionError(ChitError, ValueError):
    """A permission name that does not follow ``service:resource:action``."""


class OAuth2Error(ChitError):
    """An error answered on the wire as ``{"error": code, "error_description": ...}``."""

    error: str = "server_error"
    status_code: int = 400

    def __init__(self, description: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequestError(OAuth2Error):
    error = "invalid_request"


class InvalidClientError(OAuth2Error):
    error = "invalid_client"
    status_code = 401


class InvalidGrantError(OAuth2Error):
    error = "invalid_grant"


class UnauthorizedClientError(OAuth2Error):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuth2Error):
    error = "unsupported_grant_type"


class InvalidScopeError(OAuth2Error):
    error = "invalid_scope"


class UnsupportedTokenTypeError(OAuth2Error):
    """RFC 7009 §2.2.1."""

    error = "unsupported_token_type"


class InvalidTargetError(OAuth2Error):
    """RFC 8693 §2.2.2."""

    error = "invalid_target"


class TooManyAttemptsError(OAuth2Error):
    """Brute-force protection: answered 429 with ``Retry-After``."""

    error = "invalid_request"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(
            f"too many failed attempts; retry after {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class DatabaseBusyError(OAuth2Error):
    """Another session held a database lock longer than this process may wait: 503, retry shortly.

    Raised by the storage layer (SQLite "database is locked", PostgreSQL ``lock_not_available``).
    """

    error = "temporarily_unavailable"
    status_code = 503
    retry_after = 1

    def __init__(self, description: str = "the database is busy; retry shortly") -> None:
        super().__init__(description, headers={"Retry-After": str(self.retry_after)})


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413


class AuthError(ChitError):
    """A resource server's refusal (RFC 6750 §3.1)."""

    error: str = "invalid_token"
    status_code: int = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidTokenError(AuthError):
    error = "invalid_token"
    status_code = 401


class InsufficientScopeError(AuthError):
    error = "insufficient_scope"
    status_code = 403
