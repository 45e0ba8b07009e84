"""Outbound calls: a service's own identity (client credentials) and forwarding the caller's token.

``ServiceIdentity`` holds the service's client id and secret, obtains its ``client_credentials`` token
(RFC 6749 §4.4, ``client_secret_basic`` with form-encoded credentials, §2.3.1), keeps it and renews it
before it expires: one request to the token endpoint however many calls need a token at once, and a
token that still works is kept when a renewal fails (``chit.sdk.fetch.SingleFlight``). It is
an ``httpx.Auth``, so ``httpx.AsyncClient(auth=identity)`` (or ``httpx.Client``) sends it, and a 401
``invalid_token`` answer (a revoked token, a key rotated in a hurry) gets one retry with a new token.

For a user, a service exchanges the user's token for one addressed to the service it calls (RFC 8693
token exchange, ``chit.sdk.delegation``): ``for_user`` is the ``httpx.Auth`` that does it per request
and keeps the exchanged tokens, ``exchange`` the single call; ``defer`` turns the user's token into a
deferred-delegation handle that a later job redeems with ``with_delegation``.

``ForwardedToken`` sends the token of the request being handled (``chit.sdk.context``) instead.

``ServiceIdentity.from_env("cart")`` is the service's own, read from its environment at startup
(``chit.sdk.settings``): a missing secret ends the process with a message naming the fix.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Self
from urllib.parse import quote_plus, urlencode

import httpx

from chit.errors import FetchError
from chit.errors import TokenRequestError as TokenRequestError
from chit.sdk import context
from chit.sdk.delegation import (
    ACCESS_TOKEN_TYPE,
    BEARER,
    DEFERRED_DELEGATION_TYPE,
    MAX_DELEGATED_TOKENS,
    RETRY_AFTER_FAILURE,
    DelegatedTokens,
    ExchangedToken,
    RenewingBearer,
    RenewingToken,
    exchange_form,
    exchanged,
    lifetime,
    needs_retry,
    replayable,
    scope_of,
    scope_values,
    token_answer,
    token_hash,
)
from chit.sdk.fetch import (
    FETCH_TIMEOUT,
    Fetched,
    HttpGetter,
    Reply,
    SingleFlight,
    is_secure_url,
)
from chit.sdk.settings import DEFAULT_ISSUER, ISSUER_VARIABLE, client_secret_variable, missing_client_secret, stop

DEFAULT_REFRESH_BEFORE = 60.0
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class ServiceToken:
    access_token: str = field(repr=False)
    scope: tuple[str, ...]
    obtained_at: float
    expires_at: float
    refresh_at: float


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
        max_delegated_tokens: int = MAX_DELEGATED_TOKENS,
    ) -> None:
        if issuer is None and token_url is None:
            raise TypeError("ServiceIdentity needs an issuer (for discovery) or a token_url")
        for url in (issuer, token_url):
            if url is not None and not is_secure_url(url):
                # the secret, and every user token exchanged, would cross the network in clear text
                raise ValueError(f"{url!r} must be https (plain http only on loopback hosts)")
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
        self._delegated = DelegatedTokens(max_delegated_tokens, clock)
        self.requests = 0  # client_credentials requests sent, for tests and metrics
        self.exchanges = 0  # token-exchange requests sent, for tests and metrics

    @classmethod
    def from_env(
        cls,
        client_id: str,
        *,
        issuer: str | None = None,
        environ: Mapping[str, str] | None = None,
        scope: Iterable[str] | None = None,
        auth_method: ClientAuthMethod = "client_secret_basic",
        timeout: float = FETCH_TIMEOUT,
    ) -> ServiceIdentity:
        """The service's identity as its environment (``environ``, by default the process's) configures it:
        the secret from ``<CLIENT_ID>_CLIENT_SECRET`` (``cart``: ``CART_CLIENT_SECRET``; ``image-store``:
        ``IMAGE_STORE_CLIENT_SECRET``), the auth server from ``issuer``, else ``CHIT_ISSUER``, else
        ``http://127.0.0.1:8700``.

        Meant for a service's startup: when the secret is missing or empty it ends the process
        (``SystemExit``, status 1) with a message naming the variable and the command that printed the
        secret, which uvicorn prints without a traceback. Code that wants an exception instead builds
        ``ServiceIdentity(client_id, secret, issuer=...)`` itself."""
        source = os.environ if environ is None else environ
        secret = source.get(client_secret_variable(client_id), "").strip()
        if not secret:
            stop(missing_client_secret(client_id))
        issuer = issuer or source.get(ISSUER_VARIABLE) or DEFAULT_ISSUER
        if not is_secure_url(issuer):
            stop(f"{ISSUER_VARIABLE}={issuer!r} must be https (plain http only on loopback hosts)")
        return cls(client_id, secret, issuer=issuer, scope=scope, auth_method=auth_method, timeout=timeout)

    def __repr__(self) -> str:  # never let the secret reach a log
        return f"ServiceIdentity(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def narrowed(self, scope: Iterable[str]) -> ServiceIdentity:
        """This service asking for ``scope`` only: the same credentials, token endpoint, http clients and
        clock, with tokens of its own. A client's tokens carry only what its request's ``scope`` names
        when it names one, so a permission kept out of everyday tokens (``chit:revocations:read``) is
        asked for by an identity narrowed to it, and never travels to the services this one calls."""
        identity = ServiceIdentity(
            self.client_id,
            self._secret,
            issuer=self.issuer,
            token_url=self.token_url,
            scope=scope,
            auth_method=self.auth_method,
            refresh_before=self.refresh_before,
            timeout=self.timeout,
            clock=self.clock,
            max_delegated_tokens=self._delegated.max_entries,
        )
        identity._getter = self._getter  # the caller's http clients, if any
        return identity

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
        current = (
            self._usable(stale)
            or self._token.held_back(stale, self.clock(), _access_token)
            or await self._token.obtain()
        )
        return current.access_token

    def sync_token(self, *, stale: str | None = None) -> str:
        """``token`` for synchronous code (``httpx.Client``); threads share one request."""
        current = (
            self._usable(stale)
            or self._token.held_back(stale, self.clock(), _access_token)
            or self._token.obtain_sync(lambda: self._usable(stale))
        )
        return current.access_token

    async def _fetch(self) -> Fetched[ServiceToken]:
        started = self.clock()
        reply = await self._post(self._client_credentials_form())
        return self._accept(reply, started)

    def _fetch_sync(self) -> Fetched[ServiceToken]:
        started = self.clock()
        reply = self._post_sync(self._client_credentials_form())
        return self._accept(reply, started)

    def _client_credentials_form(self) -> dict[str, str]:
        self.requests += 1
        form = {"grant_type": "client_credentials"}
        if self.scope is not None:
            form["scope"] = " ".join(self.scope)
        return form

    def _accept(self, reply: Reply, started: float) -> Fetched[ServiceToken]:
        body = token_answer(reply, token_type=BEARER)
        seconds = lifetime(body)
        token = ServiceToken(
            access_token=body["access_token"],
            scope=scope_of(body),
            obtained_at=started,
            expires_at=started + seconds,
            refresh_at=self._refresh_at(started, started + seconds),
        )
        return Fetched(token, renew_at=token.refresh_at, expires_at=token.expires_at)

    def _refresh_at(self, started: float, expires_at: float) -> float:
        """``refresh_before`` ahead of expiry, or half-way through a shorter life."""
        life = expires_at - started
        return started + life - min(self.refresh_before, life / 2)

    # --- the token endpoint ---------------------------------------------------------------------------

    async def _post(self, form: dict[str, str]) -> Reply:
        with _unreachable_is_unavailable():
            if self.token_url is None:
                self.token_url = await self._getter.discover(self._issuer(), "token_endpoint")
            headers, content = self._authenticated(form)
            return await self._getter.send("POST", self.token_url, headers=headers, content=content)

    def _post_sync(self, form: dict[str, str]) -> Reply:
        with _unreachable_is_unavailable():
            if self.token_url is None:
                self.token_url = self._getter.discover_sync(self._issuer(), "token_endpoint")
            headers, content = self._authenticated(form)
            return self._getter.send_sync("POST", self.token_url, headers=headers, content=content)

    def _issuer(self) -> str:
        assert self.issuer is not None  # without a token_url, the constructor asked for an issuer
        return self.issuer

    def _authenticated(self, form: dict[str, str]) -> tuple[dict[str, str], bytes]:
        """The headers and body of a token request that authenticates this client (RFC 6749 §2.3.1)."""
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if self.auth_method == "client_secret_basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form = {**form, "client_id": self.client_id, "client_secret": self._secret}
        return headers, urlencode(form).encode()

    # --- token exchange (RFC 8693) --------------------------------------------------------------------

    async def exchange(
        self,
        subject_token: str,
        *,
        audience: str | None = None,
        scope: Iterable[str] | None = None,
        requested_token_type: str | None = None,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
    ) -> ExchangedToken:
        """Exchange ``subject_token`` (by default a user's access token that names this service in its
        ``aud``) for a token to call ``audience`` with, narrowed to ``scope``. One request, no caching:
        ``for_user`` is what keeps the exchanged tokens."""
        form = exchange_form(
            subject_token,
            subject_token_type=subject_token_type,
            audience=audience,
            scope=scope_values(scope),
            requested_token_type=requested_token_type,
        )
        started = self.clock()
        self.exchanges += 1
        return exchanged(await self._post(form), started, requested_token_type)

    def exchange_sync(
        self,
        subject_token: str,
        *,
        audience: str | None = None,
        scope: Iterable[str] | None = None,
        requested_token_type: str | None = None,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
    ) -> ExchangedToken:
        """``exchange`` for synchronous code."""
        form = exchange_form(
            subject_token,
            subject_token_type=subject_token_type,
            audience=audience,
            scope=scope_values(scope),
            requested_token_type=requested_token_type,
        )
        started = self.clock()
        self.exchanges += 1
        return exchanged(self._post_sync(form), started, requested_token_type)

    def for_user(self, audience: str, *, scope: Iterable[str] | None = None, token: str | None = None) -> httpx.Auth:
        """An ``httpx.Auth`` that calls ``audience`` for the user: for each request it exchanges the
        user's token (``token``, else the one of the request being handled) for one addressed to
        ``audience`` and sends that. Exchanged tokens are kept per user token, audience and scope until
        shortly before they expire; concurrent calls share one exchange.

            await client.post(url, auth=identity.for_user("tagging"))
        """
        if not isinstance(audience, str) or not audience:
            raise TypeError("audience must be a service id")
        wanted = scope_values(scope)

        def pick() -> RenewingToken:
            subject_token = token if token is not None else context.current_token()
            if subject_token is None:
                raise RuntimeError("no request token to exchange: call from inside an authenticated request")
            return self._renewing(ACCESS_TOKEN_TYPE, subject_token, audience, wanted)

        return RenewingBearer(pick)

    # --- deferred delegation --------------------------------------------------------------------------

    async def defer(
        self,
        *,
        scope: Iterable[str] | None = None,
        job_id: str | None = None,
        expires_in: int | None = None,
        token: str | None = None,
    ) -> str:
        """A deferred-delegation handle: the user's permissions in ``scope`` (within what this service
        may defer), for a job to exercise later with ``with_delegation``. ``token`` is the user's access
        token, else the one of the request being handled. The handle is a secret: store it as one."""
        form = self._defer_form(scope, job_id, expires_in, token)
        started = self.clock()
        self.exchanges += 1
        return exchanged(await self._post(form), started, DEFERRED_DELEGATION_TYPE).access_token

    def defer_sync(
        self,
        *,
        scope: Iterable[str] | None = None,
        job_id: str | None = None,
        expires_in: int | None = None,
        token: str | None = None,
    ) -> str:
        """``defer`` for synchronous code."""
        form = self._defer_form(scope, job_id, expires_in, token)
        started = self.clock()
        self.exchanges += 1
        return exchanged(self._post_sync(form), started, DEFERRED_DELEGATION_TYPE).access_token

    def _defer_form(
        self, scope: Iterable[str] | None, job_id: str | None, expires_in: int | None, token: str | None
    ) -> dict[str, str]:
        subject_token = token if token is not None else context.current_token()
        if subject_token is None:
            raise RuntimeError("no request token to defer: call from inside an authenticated request")
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1
        ):
            raise ValueError("expires_in is a positive number of seconds")
        form = exchange_form(subject_token, scope=scope_values(scope), requested_token_type=DEFERRED_DELEGATION_TYPE)
        if job_id is not None:
            form["job_id"] = job_id
        if expires_in is not None:
            form["expires_in"] = str(expires_in)
        return form

    def with_delegation(
        self, handle: str, *, audience: str | None = None, scope: Iterable[str] | None = None
    ) -> httpx.Auth:
        """An ``httpx.Auth`` that acts for the user a deferred-delegation ``handle`` names: it redeems
        the handle for a short-lived access token, keeps it until shortly before it expires, and
        redeems the handle again when needed (one request for concurrent calls)."""
        if not isinstance(handle, str) or not handle:
            raise TypeError("handle must be the string that defer returned")
        wanted = scope_values(scope)
        return RenewingBearer(lambda: self._renewing(DEFERRED_DELEGATION_TYPE, handle, audience, wanted))

    def _renewing(
        self, subject_token_type: str, subject_token: str, audience: str | None, scope: tuple[str, ...] | None
    ) -> RenewingToken:
        """The kept token exchanged from ``subject_token`` for ``audience`` and ``scope``."""
        key = (
            subject_token_type,
            token_hash(subject_token),
            audience,
            None if scope is None else frozenset(scope),
        )

        def kept(token: ExchangedToken, started: float) -> Fetched[ExchangedToken]:
            return Fetched(token, renew_at=self._refresh_at(started, token.expires_at), expires_at=token.expires_at)

        async def fetch() -> Fetched[ExchangedToken]:
            started = self.clock()
            token = await self.exchange(
                subject_token, audience=audience, scope=scope, subject_token_type=subject_token_type
            )
            return kept(token, started)

        def fetch_sync() -> Fetched[ExchangedToken]:
            started = self.clock()
            token = self.exchange_sync(
                subject_token, audience=audience, scope=scope, subject_token_type=subject_token_type
            )
            return kept(token, started)

        what = f"the token of {self.client_id} for {audience or 'its audience'}"
        return self._delegated.get(key, lambda: RenewingToken(what, fetch, fetch_sync, self.clock))

    # --- httpx.Auth -----------------------------------------------------------------------------------

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if needs_retry(response) and replayable(request):
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await self.token(stale=token)}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.sync_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if needs_retry(response) and replayable(request):
            response.read()
            request.headers["Authorization"] = f"Bearer {self.sync_token(stale=token)}"
            yield request

    async def aclose(self) -> None:
        """Cancel the token requests under way; the identity stays usable."""
        await self._token.aclose()
        await self._delegated.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class BearerOrFallback(httpx.Auth):
    """Sends the bearer token ``bearer(request)`` gives; when it gives none, ``fallback`` (e.g. the
    service's own identity) authenticates the request instead, its whole flow (retries included)."""

    fallback: httpx.Auth | None = None

    def bearer(self, request: httpx.Request) -> str | None:
        raise NotImplementedError

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self.bearer(request)
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
        token = self.bearer(request)
        if token is None:
            assert self.fallback is not None
            yield from self.fallback.sync_auth_flow(request)
            return
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


class ForwardedToken(BearerOrFallback):
    """Sends the bearer token of the request being handled; ``fallback`` (e.g. the service's own
    identity) when there is none, else ``RuntimeError``."""

    def __init__(self, fallback: httpx.Auth | None = None) -> None:
        self.fallback = fallback

    def bearer(self, request: httpx.Request) -> str | None:
        token = context.current_token()
        if token is None and self.fallback is None:
            raise RuntimeError("no request token to forward: call from inside an authenticated request")
        return token


def _access_token(value: ServiceToken) -> str:
    return value.access_token
