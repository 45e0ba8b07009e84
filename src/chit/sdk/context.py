"""The current request's principal and token, for code far from the handler (outbound calls, logs).

Adapters bind them for the duration of a request; a context variable keeps concurrent requests apart
and follows the request into ``run_in_threadpool`` and tasks it creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import NamedTuple

from chit.policy.principals import Principal


class RequestAuth(NamedTuple):
    """A request's principal and the token it was verified from (a tuple: built on every request)."""

    principal: Principal
    token: str

    def __repr__(self) -> str:  # the bearer token stays out of logs
        return f"RequestAuth(principal={self.principal!r}, token=...)"


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


class Unbinding:
    """Ends a binding when an exit stack closes: ``stack.push(Unbinding(bind(...)))``, cheaper per request
    than ``stack.callback(unbind, ...)``."""

    __slots__ = ("_bound",)

    def __init__(self, bound: Token[RequestAuth | None]) -> None:
        self._bound = bound

    def __enter__(self) -> Unbinding:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        unbind(self._bound)


@contextmanager
def authenticated(principal: Principal, token: str) -> Iterator[RequestAuth]:
    """Bind a principal and its token for the block (tests, background jobs, other frameworks)."""
    bound = bind(principal, token)
    try:
        yield RequestAuth(principal, token)
    finally:
        unbind(bound)
