"""Every chit error as an HTTP answer, in one place; and the bearer credentials those answers are about.

``answer_to(error)`` is the status, the JSON body and the headers that answer ``error``, whoever serves
it: the auth server (``chit.server.app``) and the SDK's adapters (``chit.sdk.fastapi``,
``chit.sdk.starlette``) only render it. No framework is imported here.

* ``OAuth2Error``: RFC 6749 §5.2, ``{"error", "error_description"}`` with the error's status and
  headers (``Retry-After`` on 429 and 503).
* ``AuthError``: RFC 6750 §3, the error's status and a ``WWW-Authenticate`` challenge naming it; no
  credentials at all (``MissingTokenError``) get a bare ``Bearer`` challenge (§3.1).
* The admin API's refusals: ``ForbiddenError`` 403 ``insufficient_scope``, ``NotFoundError`` 404,
  ``ConflictError`` 409, ``AuditWriteError`` 503 (with ``Retry-After`` when only a database lock
  was in the way), any other ``ChitError`` 400 ``invalid_request``.
* ``ServiceUnavailableError``: ``KeysUnavailableError`` (the SDK holds no signing key yet),
  ``RevocationsStaleError`` (its revocation list is stale and its policy refuses the request): 503
  with ``Retry-After``.

``bearer_token`` reads a request's ``Authorization`` header values (RFC 6750 §2.1) the same way in
the admin API and in every service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chit.errors import (
    AuditWriteError,
    AuthError,
    ChitError,
    ConflictError,
    ForbiddenError,
    InvalidBearerRequestError,
    MissingTokenError,
    NotFoundError,
    OAuth2Error,
    ServiceUnavailableError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer: the status, the RFC error code and description (the JSON body), the headers."""

    status: int
    error: str
    description: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


def answer_to(error: ChitError, scope: Iterable[str] = ()) -> Answer:
    """The answer to ``error``; ``scope``, the permissions a route requires, goes in an
    ``insufficient_scope`` challenge."""
    if isinstance(error, OAuth2Error):
        return Answer(error.status_code, error.error, error.description, dict(error.headers))
    if isinstance(error, AuthError):
        return Answer(error.status_code, error.error, error.reason, {"WWW-Authenticate": challenge(error, scope)})
    if isinstance(error, ForbiddenError):
        return Answer(403, "insufficient_scope", str(error), {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    if isinstance(error, NotFoundError):
        return Answer(404, "not_found", str(error))
    if isinstance(error, ConflictError):
        return Answer(409, "conflict", str(error))
    if isinstance(error, ServiceUnavailableError):  # its reason is for the service's log, not for the caller
        return _unavailable("authorization is temporarily unavailable", error.retry_after)
    if isinstance(error, AuditWriteError):
        return _unavailable(str(error), error.retry_after)
    return Answer(400, "invalid_request", str(error))


def _unavailable(description: str, retry_after: int | None) -> Answer:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Answer(503, "temporarily_unavailable", description, headers)


def _quoted(text: str) -> str:
    # RFC 6750 §3: error_description and scope allow %x20-21 / %x23-5B / %x5D-7E only
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


def challenge(error: AuthError | None, scope: Iterable[str] = ()) -> str:
    """The ``WWW-Authenticate`` value answering ``error`` (RFC 6750 §3)."""
    if error is None or isinstance(error, MissingTokenError) or not error.error:
        return "Bearer"
    parts = [f'error="{error.error}"']
    if error.reason:
        parts.append(f'error_description="{_quoted(error.reason)}"')
    scopes = " ".join(scope)
    if scopes and error.error == "insufficient_scope":
        parts.append(f'scope="{_quoted(scopes)}"')
    return "Bearer " + ", ".join(parts)


def bearer_token(authorization: Sequence[str]) -> str:
    """The token of the request's ``Authorization`` header values (RFC 6750 §2.1).

    None, or another scheme: ``MissingTokenError`` (401, bare challenge). Two headers, an empty or a
    malformed value: ``InvalidBearerRequestError`` (400 ``invalid_request``). The scheme is
    case-insensitive; a token in the query string or the body is never read.
    """
    if not authorization:
        raise MissingTokenError("no bearer token")
    if len(authorization) > 1:
        raise InvalidBearerRequestError("more than one Authorization header")
    scheme, _, value = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingTokenError("no bearer token")  # another scheme: not our credentials (RFC 6750 §3.1)
    token = value.strip()
    if not token:
        raise InvalidBearerRequestError("empty bearer token")
    if len(token.split(None, 1)) > 1:  # whitespace inside (str.split splits where a regex \s matches)
        raise InvalidBearerRequestError("malformed bearer token")
    return token
