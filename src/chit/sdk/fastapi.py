"""FastAPI adapter: the ``Verifier`` instance is the dependency and the OAuth2 scheme of the OpenAPI.

    principal: Principal = Security(verifier, scopes=["image-store:images:read"])

The dependency reads the bearer token (``chit.answers.bearer_token``), verifies it, requires the
route's scopes (for a chit, its checks run with the route's permissions as ``operation`` facts and
the request's method and path), binds the principal for outbound calls (``chit.sdk.context``) and
yields it. Because
it yields, an ``AuthError`` raised in the route body (``principal.require_owner(...)``) comes back
through it and answers exactly like one raised by the dependency, with a plain ``FastAPI()``. A
verifier that cannot decide for now (no signing key yet, a stale revocation list refusing a write)
answers 503 with ``Retry-After``; ``FastAPI(lifespan=verifier.lifespan)`` bootstraps the revocation
list before the first request. It is
an ``async`` generator on purpose: a plain ``def`` dependency would run in the thread pool, and
verification holds the GIL anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Unpack

from fastapi import HTTPException, Request
from fastapi.openapi.models import OAuth2 as OAuth2Model
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlowPassword, OAuthFlows
from fastapi.responses import JSONResponse
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.responses import Response

from chit.answers import answer_to, bearer_token
from chit.errors import AuthError, ChitError, ServiceUnavailableError
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


class Verifier(TokenVerifier, SecurityBase):
    """A ``TokenVerifier`` that FastAPI can use directly with ``Depends``/``Security``."""

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

    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> AsyncIterator[Principal]:
        scopes = security_scopes.scopes
        try:
            token = bearer_token(request.headers.getlist("authorization"))
            principal = await self.verify(token)
            principal = self.authorize(principal, scopes, method=request.method, path=request.url.path)
        except (AuthError, ServiceUnavailableError) as exc:
            raise http_error(exc, scopes) from None
        bound = context.bind(principal, token)
        try:
            yield principal
        except AuthError as exc:
            raise http_error(exc) from exc
        finally:
            context.unbind(bound)
