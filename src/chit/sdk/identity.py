"""Outbound calls: a service's own identity (client credentials) and forwarding the caller's token.

``ServiceIdentity`` holds the service's client id and secret, obtains its ``client_credentials`` token
(RFC 6749 §4.4, ``client_secret_basic`` with form-encoded credentials, §2.3.1), keeps it and renews it
before it expires: one request to the token endpoint however many calls need a token at once, and a
token that still works is kept when a renewal fails (``chit.sdk.fetch.SingleFlight``). It is
an ``httpx.Auth``, so ``httpx.AsyncClient(auth=identity)`` (or ``httpx.Client``) sends it, and a 401
``invalid_token`` answer (a revoked token, a key rotated in a hurry) gets one retry with a new token.

``ForwardedToken`` sends the token of the request being handled (``chit.sdk.context``) instead.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import quote_plus, urlencode

import httpx

from chit.errors import FetchError
from chit.errors import TokenRequestError as TokenRequestError
from chit.sdk import context
from chit.sdk.fetch import FETCH_TIMEOUT, Fetched, HttpGetter, Reply, SingleFlight

DEFAULT_REFRESH_BEFORE = 60.0
RETRY_AFTER_FAILURE = 5.0  # while the old token still works, how long to wait before asking again
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class ServiceToken:
    access_token: str
    scope: tuple[str, ...]
    obtained_at: float
    expires_at: float
    refresh_at: float


def _needs_retry(response: httpx.Response) -> bool:
    return response.status_code == 401 and 'error="invalid_token"' in response.headers.get("www-authenticate", "")


@contextmanager
def _unreachable_is_unavailable() -> Iterator[None]:
    try:
        yield
    except (httpx.HTTPError, FetchError) as exc:
        raise TokenRequestError("temporarily_unavailable", str(exc), 503) from exc


class ServiceIdentity(httpx.Auth):
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        issuer: str | None = None,
        token_url: str | None = None,
        scope: Iterable[str] | None = None,
        auth_method: ClientAuthMethod = "client_secret_basic",
        refresh_before: float = DEFAULT_REFRESH_BEFORE,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if issuer is None and token_url is None:
            raise TypeError("ServiceIdentity needs an issuer (for discovery) or a token_url")
        self.client_id = client_id
        self._secret = client_secret
        self.issuer = issuer
        self.token_url = token_url
        self.scope = None if scope is None else tuple(scope)
        self.auth_method = auth_method
        self.refresh_before = refresh_before
        self.timeout = timeout
        self.clock = clock
        self._getter = HttpGetter(http_client, timeout, sync_http_client=sync_http_client)
        self._token: SingleFlight[ServiceToken] = SingleFlight(
            f"the token of {client_id}",
            self._fetch,
            fetch_sync=self._fetch_sync,
            errors=(TokenRequestError,),
            retry_pause=RETRY_AFTER_FAILURE,
            clock=clock,
        )
        self.requests = 0  # token requests sent, for tests and metrics

    def __repr__(self) -> str:  # never let the secret reach a log
        return f"ServiceIdentity(client_id={self.client_id!r}, token_url={self.token_url!r})"

    # --- the token ------------------------------------------------------------------------------------

    def _usable(self, stale_token: str | None) -> ServiceToken | None:
        """The token in hand when it needs no renewal (or renewal failed lately and it still works)."""
        now = self.clock()
        if now >= self._token.renew_at:
            return None
        current = self._token.usable(now)
        return None if current is None or current.access_token == stale_token else current

    async def token(self, *, stale: str | None = None) -> str:
        """A valid access token, renewed ahead of expiry; ``stale`` names one the caller saw refused."""
        current = self._usable(stale) or await self._token.obtain()
        return current.access_token

    def sync_token(self, *, stale: str | None = None) -> str:
        """``token`` for synchronous code (``httpx.Client``); threads share one request."""
        current = self._usable(stale) or self._token.obtain_sync(lambda: self._usable(stale))
        return current.access_token

    async def _fetch(self) -> Fetched[ServiceToken]:
        started = self.clock()
        with _unreachable_is_unavailable():
            if self.token_url is None:
                self.token_url = await self._getter.discover(self._issuer(), "token_endpoint")
            headers, form = self._token_request()
            reply = await self._getter.send("POST", self.token_url, headers=headers, content=form)
        return self._accept(reply, started)

    def _fetch_sync(self) -> Fetched[ServiceToken]:
        started = self.clock()
        with _unreachable_is_unavailable():
            if self.token_url is None:
                self.token_url = self._getter.discover_sync(self._issuer(), "token_endpoint")
            headers, form = self._token_request()
            reply = self._getter.send_sync("POST", self.token_url, headers=headers, content=form)
        return self._accept(reply, started)

    def _issuer(self) -> str:
        assert self.issuer is not None  # without a token_url, the constructor asked for an issuer
        return self.issuer

    def _token_request(self) -> tuple[dict[str, str], bytes]:
        self.requests += 1
        form = {"grant_type": "client_credentials"}
        if self.scope is not None:
            form["scope"] = " ".join(self.scope)
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if self.auth_method == "client_secret_basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        return headers, urlencode(form).encode()

    def _accept(self, reply: Reply, started: float) -> Fetched[ServiceToken]:
        try:
            body: Any = reply.json()
        except FetchError:
            body = None
        if reply.status_code != 200:
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                description = body.get("error_description")
                raise TokenRequestError(
                    body["error"], description if isinstance(description, str) else "", reply.status_code
                )
            raise TokenRequestError("server_error", f"token endpoint answered {reply.status_code}", 502)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("access_token"), str)
            or str(body.get("token_type", "")).lower() != "bearer"
        ):
            raise TokenRequestError("server_error", "token endpoint answered no bearer token", 502)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int) and expires_in > 0 else 60.0
        scope = body.get("scope")
        token = ServiceToken(
            access_token=body["access_token"],
            scope=tuple(scope.split()) if isinstance(scope, str) else (),
            obtained_at=started,
            expires_at=started + lifetime,
            refresh_at=started + lifetime - min(self.refresh_before, lifetime / 2),
        )
        return Fetched(token, renew_at=token.refresh_at, expires_at=token.expires_at)

    # --- httpx.Auth -----------------------------------------------------------------------------------

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if _needs_retry(response) and _replayable(request):
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await self.token(stale=token)}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.sync_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if _needs_retry(response) and _replayable(request):
            response.read()
            request.headers["Authorization"] = f"Bearer {self.sync_token(stale=token)}"
            yield request

    async def aclose(self) -> None:
        """Cancel a token request under way; the identity stays usable."""
        await self._token.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body was a one-shot stream
    except httpx.RequestNotRead:
        return False
    return True


class ForwardedToken(httpx.Auth):
    """Sends the bearer token of the request being handled; ``fallback`` (e.g. the service's own
    identity) when there is none, else ``RuntimeError``."""

    def __init__(self, fallback: httpx.Auth | None = None) -> None:
        self.fallback = fallback

    def _current(self) -> str | None:
        token = context.current_token()
        if token is None and self.fallback is None:
            raise RuntimeError("no request token to forward: call from inside an authenticated request")
        return token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._current()
        if token is None:
            assert self.fallback is not None
            flow = self.fallback.async_auth_flow(request)
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        if token is None:
            assert self.fallback is not None
            yield from self.fallback.sync_auth_flow(request)
            return
        request.headers["Authorization"] = f"Bearer {token}"
        yield request
