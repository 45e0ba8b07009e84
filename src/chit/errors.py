"""One error tree for chit: every error chit raises on purpose is a ``ChitError``.

OAuth2 errors carry the RFC code (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8693 §2.2.2) and the HTTP
status they answer with; resource-server errors (RFC 6750 §3.1) are ``AuthError``s. They become HTTP
answers in exactly one place, ``chit.answers``, which the auth server and both SDK adapters use.
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


class ForbiddenError(RefusedError):
    """The acting principal may not do this (the admin API answers 403)."""


class JwksError(ChitError, ValueError):
    """A JWKS document that is not one (it must never replace keys that worked)."""


class InvalidPermissionError(ChitError, ValueError):
    """A permission name that does not follow ``service:resource:action``."""


class OAuth2Error(ChitError):
    """An error answered on the wire as ``{"error": code, "error_description": ...}`` (``chit.answers``)."""

    error: str = "server_error"
    status_code: int = 400

    def __init__(self, description: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.headers = dict(headers or {})


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


class AuditWriteError(ChitError):
    """The audit log could not be written: the operation it records must not be answered as done.

    ``retry_after`` (seconds) is set when the cause was only a database lock held too long by another
    session: then the answer is 503 with ``Retry-After``.
    """

    def __init__(self, message: str = "the audit log could not be written", *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def caused_by(cls, cause: BaseException) -> AuditWriteError:
        if isinstance(cause, DatabaseBusyError):
            error = cls("the audit log could not be written: the database is busy", retry_after=cause.retry_after)
        else:
            error = cls()
        error.__cause__ = cause
        return error


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413


class TokenRequestError(OAuth2Error):
    """The SDK's token request was refused (the RFC 6749 §5.2 ``error``) or could not be made."""

    def __init__(self, error: str, description: str = "", status_code: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status_code = status_code


class FetchError(ChitError):
    """An SDK fetch from the issuer (discovery, JWKS, token) that gave nothing usable."""


class ServiceUnavailableError(ChitError):
    """A service cannot decide on a request for now (answer 503 with ``Retry-After``): its own state, not
    the caller's credentials, is at fault, so the reason is for the service's log, not for the caller."""

    retry_after = 1


class KeysUnavailableError(ServiceUnavailableError):
    """No signing key could be obtained from the issuer yet, so no token can be checked (answer 503)."""

    retry_after = 1  # the SDK tries a first key fetch again after a second


class RevocationsStaleError(ServiceUnavailableError):
    """The service's revocation list has not been confirmed current for longer than its ``max_staleness``,
    and its policy refuses this request meanwhile (by default a write): answer 503 with ``Retry-After``.

    ``staleness`` is how long ago (seconds; infinite when never) the feed last confirmed the list."""

    def __init__(self, staleness: float, retry_after: int = 5) -> None:
        since = "never confirmed" if staleness == float("inf") else f"last confirmed {staleness:.1f} s ago"
        super().__init__(f"the revocation list is stale ({since})")
        self.staleness = staleness
        self.retry_after = max(1, int(retry_after))


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


class MissingTokenError(InvalidTokenError):
    """No bearer credentials at all (RFC 6750 §3.1): 401 with a bare ``WWW-Authenticate: Bearer``."""


class InvalidBearerRequestError(AuthError):
    """The Authorization header is empty, malformed or repeated (RFC 6750 §3.1 ``invalid_request``)."""

    error = "invalid_request"
    status_code = 400
