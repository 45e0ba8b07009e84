"""FastAPI adapter: the ``Verifier`` instance is the dependency and the OAuth2 scheme of the OpenAPI.

    principal: Principal = Security(verifier, scopes=["image-store:images:read"])

The dependency reads the bearer token (``chit.answers.bearer_token``), verifies it, requires the
route's scopes (for a chit, its checks run with the route's permissions as ``operation`` facts and
the request's method and path), binds the principal for outbound calls (``chit.sdk.context``) until the
request ends, and returns it. The principal's own refusals in the route body (``require_owner``...) raise
``HTTPInsufficientScopeError``, an ``InsufficientScopeError`` that is also the ``HTTPException`` of its
answer: 403 with its challenge, with a plain ``FastAPI()`` and no setup. An ``AuthError`` the route
body raises by itself needs one argument, ``FastAPI(exception_handlers=verifier.exception_handlers)``.
A verifier that cannot decide for now (no signing key yet, a stale revocation list refusing a write)
answers 503 with ``Retry-After``; ``FastAPI(lifespan=verifier.lifespan)`` bootstraps the revocation
list before the first request.

It is a plain ``async def`` on purpose: a ``def`` dependency would run in the thread pool (verification
holds the GIL anyway), and one that yields costs FastAPI about 30 µs a request, as much as the rest
of the dependency. It reads the ``Authorization`` header, method and path from the ASGI scope: a
``Request.headers`` or ``Request.url`` built for one value costs more than the verification of a
token seen before. A token seen before takes the short way through each step: the header value it
came in (``token_of``), its principal (``verify_cached``, no coroutine), a route's permissions it
holds word for word while allows are not logged (``authorize``); the binding ends by an exit-stack
entry (``context.Unbinding``), not a closure.

The ``path`` fact is ``scope["path"]`` as it is, the path the router matched: percent-decoded and never
re-escaped, as ``Request.url.path`` is (``?``, ``#`` and ``\\`` become ``%3F``, ``%23``, ``%5C``, which would make
``/docs/a%3Fb`` and ``/docs/a%253Fb`` state one fact). The Starlette middleware and
``ChitForwarder(bind_request=True)`` state the same form (``chit.core.chit_authorizer``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Unpack

from fastapi import HTTPException, Request
from fastapi.openapi.models import OAuth2 as OAuth2Model
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlowPassword, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.responses import Response

from chit.answers import answer_to
from chit.errors import AuthError, ChitError, InsufficientScopeError, ServiceUnavailableError
from chit.policy.principals import Principal
from chit.sdk import context
from chit.sdk.verifier import TokenVerifier, VerifierOptions

DEFAULT_SCHEME_NAME = "chit"


def http_error(error: ChitError, scope: Iterable[str] = ()) -> HTTPException:
    """The answer to ``error`` (``chit.answers``) as the ``HTTPException`` FastAPI renders, so that the
    app's own handlers still apply; the body is FastAPI's ``{"detail": ...}``."""
    answer = answer_to(error, scope)
    return HTTPException(answer.status, answer.description, headers=answer.headers)


async def auth_error_handler(_request: Request, exc: Exception) -> Response:
    """For ``app.add_exception_handler(AuthError, ...)``: answers AuthErrors raised outside the dependency."""
    assert isinstance(exc, AuthError)
    answer = answer_to(exc)
    return JSONResponse({"detail": answer.description}, status_code=answer.status, headers=answer.headers)


class HTTPInsufficientScopeError(InsufficientScopeError, HTTPException):
    """An ``InsufficientScopeError`` that FastAPI answers by itself, as ``http_error`` would: what the
    principals of a ``Verifier`` raise when the route body's ``require*`` is refused. ``except
    InsufficientScopeError`` (or ``AuthError``) still catches it, and an ``AuthError`` handler still
    comes first."""

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)  # not AuthError's: its super() would reach HTTPException's
        self.reason = reason
        answer = answer_to(self)  # by the class's status_code and error
        self.status_code = answer.status
        self.detail = answer.description
        self.headers = answer.headers

    def __str__(self) -> str:
        return self.reason


class Verifier(TokenVerifier, SecurityBase):
    """A ``TokenVerifier`` that FastAPI can use directly with ``Depends``/``Security``."""

    refusal = HTTPInsufficientScopeError

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        scheme_name: str = DEFAULT_SCHEME_NAME,
        scopes: Mapping[str, str] | None = None,
        description: str | None = None,
        **options: Unpack[VerifierOptions],
    ) -> None:
        super().__init__(issuer, audience, **options)
        self.scheme_name = scheme_name
        # The OpenAPI must not need the network: the token URL is known from the issuer up front.
        described = dict(scopes or {})
        self.model = OAuth2Model(
            flows=OAuthFlows(
                clientCredentials=OAuthFlowClientCredentials(tokenUrl=self.token_url, scopes=described),
                password=OAuthFlowPassword(tokenUrl=self.token_url, scopes=described),
            ),
            description=description or f"Access tokens issued by {issuer} for {audience}",
        )

    @property
    def exception_handlers(
        self,
    ) -> dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]]:
        """For ``FastAPI(exception_handlers=verifier.exception_handlers)``: an ``AuthError`` a route raises by
        itself answers as one the dependency raised (401 or 403 with its challenge), not 500."""
        return {AuthError: auth_error_handler}

    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> Principal:
        scopes = security_scopes.scopes
        scope = request.scope
        try:
            token = self.token_of(scope["headers"])
            principal = self.verify_cached(token) or await self.verify(token)
            principal = self.authorize(principal, scopes, method=scope["method"], path=scope["path"])
        except (AuthError, ServiceUnavailableError) as exc:
            raise http_error(exc, scopes) from None
        bound = context.bind(principal, token)
        # Unbound when FastAPI closes the request's exit stack (it has no public hook short of a yielding
        # dependency). Without that stack the binding ends with the request's task, as under uvicorn.
        stack = scope.get("fastapi_inner_astack")
        if isinstance(stack, AsyncExitStack):
            stack.push(context.Unbinding(bound))
        return principal
