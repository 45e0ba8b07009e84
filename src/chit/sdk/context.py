"""The current request's principal and token, for code far from the handler (outbound calls, logs).

Adapters bind them for the duration of a request; a context variable keeps concurrent requests apart
and follows the request into ``run_in_threadpool`` and tasks it creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

from chit.policy.principals import Principal


@dataclass(frozen=True, slots=True)
class RequestAuth:
    principal: Principal
    token: str


_current: ContextVar[RequestAuth | None] = ContextVar("chit_request_auth", default=None)


def current_auth() -> RequestAuth | None:
    return _current.get()


def current_principal() -> Principal | None:
    auth = _current.get()
    return None if auth is None else auth.principal


def current_token() -> str | None:
    auth = _current.get()
    return None if auth is None else auth.token


def bind(principal: Principal, token: str) -> Token[RequestAuth | None]:
    return _current.set(RequestAuth(principal, token))


def unbind(token: Token[RequestAuth | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        _current.set(None)  # reset from another context (a framework ran teardown elsewhere)


@contextmanager
def authenticated(principal: Principal, token: str) -> Iterator[RequestAuth]:
    """Bind a principal and its token for the block (tests, background jobs, other frameworks)."""
    bound = bind(principal, token)
    try:
        yield RequestAuth(principal, token)
    finally:
        unbind(bound)
