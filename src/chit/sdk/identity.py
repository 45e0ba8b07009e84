"""Outbound calls: a service's own identity (client credentials) and forwarding the caller's token.

``ServiceIdentity`` holds the service's client id and secret, obtains its ``client_credentials`` token
(RFC 6749 §4.4, ``client_secret_basic`` with form-encoded credentials, §2.3.1), keeps it and renews it
before it expires: one request to the token endpoint however many calls need a token at once. It is
an ``httpx.Auth``, so ``httpx.AsyncClient(auth=identity)`` (or ``httpx.Client``) sends it, and a 401
``invalid_token`` answer (a revoked token, a key rotated in a hurry) gets one retry with a new token.

``ForwardedToken`` sends the token of the request being handled (``chit.sdk.context``) instead.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import quote_plus, urlencode

import httpx

from chit.errors import OAuth2Error
from chit.sdk import context
from chit.sdk.jwks_client import DISCOVERY_PATH, FETCH_TIMEOUT, FetchError, HttpGetter

log = logging.getLogger("chit.sdk")

DEFAULT_REFRESH_BEFORE = 60.0
RETRY_AFTER_FAILURE = 5.0  # while the old token still works, how long to wait before asking again
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


class TokenRequestError(OAuth2Error):
    """The token endpoint refused (its RFC 6749 §5.2 ``error``) or could not be reached."""

    def __init__(self, error: str, description: str = "", status_code: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class ServiceToken:
    access_token: str
    scope: tuple[str, ...]
    obtained_at: float
    expires_at: float
    refresh_at: float


def _needs_retry(response: httpx.Response) -> bool:
    return response.status_code == 401 and 'error="invalid_token"' in response.headers.get("www-authenticate", "")


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
        self._getter = HttpGetter(http_client, timeout)
        self._sync_http = sync_http_client
        self._current: ServiceToken | None = None
        self._retry_at = 0.0
        self._inflight: asyncio.Task[ServiceToken] | None = None
        self._sync_lock = threading.Lock()
        self.requests = 0  # token requests sent, for tests and metrics

    def __repr__(self) -> str:  # never let the secret reach a log
        return f"ServiceIdentity(client_id={self.client_id!r}, token_url={self.token_url!r})"

    # --- the token ------------------------------------------------------------------------------------

    def _usable(self, now: float, stale_token: str | None) -> ServiceToken | None:
        """The cached token when it needs no renewal (or renewal failed lately and it still works)."""
        current = self._current
        if current is None or current.access_token == stale_token or now >= current.expires_at:
            return None
        if now < current.refresh_at or now < self._retry_at:
            return current
        return None

    async def token(self, *, stale: str | None = None) -> str:
        """A valid access token, renewed ahead of expiry; ``stale`` names one the caller saw refused."""
        current = self._usable(self.clock(), stale)
        if current is not None:
            return current.access_token
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.get_running_loop().create_task(self._renew_async(), name=f"chit-token-{self.client_id}")
            self._inflight = task
        return (await asyncio.shield(task)).access_token

    def sync_token(self, *, stale: str | None = None) -> str:
        """``token`` for synchronous code (``httpx.Client``); threads share one request."""
        current = self._usable(self.clock(), stale)
        if current is not None:
            return current.access_token
        with self._sync_lock:
            current = self._usable(self.clock(), stale)
            if current is not None:
                return current.access_token
            return self._renew_sync().access_token

    async def _renew_async(self) -> ServiceToken:
        started = self.clock()
        try:
            token_url = await self._token_url_async()
            async with self._getter.client() as client:
                response = await client.send(self._token_request(token_url))
                await response.aread()
            return self._accept(response, started)
        except (httpx.HTTPError, FetchError) as exc:
            return self._failed(TokenRequestError("temporarily_unavailable", str(exc), 503), exc)
        except TokenRequestError as exc:
            return self._failed(exc, exc)

    def _renew_sync(self) -> ServiceToken:
        started = self.clock()
        try:
            token_url = self.token_url or self._discover_sync()
            response = self._sync_send(self._token_request(token_url))
            return self._accept(response, started)
        except (httpx.HTTPError, FetchError) as exc:
            return self._failed(TokenRequestError("temporarily_unavailable", str(exc), 503), exc)
        except TokenRequestError as exc:
            return self._failed(exc, exc)

    def _failed(self, error: TokenRequestError, cause: Exception) -> ServiceToken:
        now = self.clock()
        current = self._current
        if current is not None and now < current.expires_at:
            log.warning("could not renew the token of %s (%s); using the current one", self.client_id, cause)
            self._retry_at = now + RETRY_AFTER_FAILURE
            return current
        raise error from cause

    async def _token_url_async(self) -> str:
        if self.token_url is None:
            assert self.issuer is not None
            document, _ = await self._getter.get_json(self.issuer.rstrip("/") + DISCOVERY_PATH)
            self.token_url = self._token_endpoint(document)
        return self.token_url

    def _discover_sync(self) -> str:
        assert self.issuer is not None
        response = self._sync_send(httpx.Request("GET", self.issuer.rstrip("/") + DISCOVERY_PATH))
        if response.status_code != 200:
            raise FetchError(f"discovery answered {response.status_code}")
        try:
            document = response.json()
        except ValueError as exc:
            raise FetchError("discovery did not answer JSON") from exc
        self.token_url = self._token_endpoint(document)
        return self.token_url

    def _sync_send(self, request: httpx.Request) -> httpx.Response:
        if self._sync_http is not None:
            return self._sync_http.send(request)
        with httpx.Client(timeout=self.timeout) as client:
            return client.send(request)

    def _token_endpoint(self, document: object) -> str:
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchError(f"discovery document is not {self.issuer}'s")
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise FetchError("discovery document has no token_endpoint")
        return endpoint

    def _token_request(self, token_url: str) -> httpx.Request:
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
        return httpx.Request("POST", token_url, content=urlencode(form).encode(), headers=headers)

    def _accept(self, response: httpx.Response, started: float) -> ServiceToken:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                description = body.get("error_description")
                raise TokenRequestError(
                    body["error"], description if isinstance(description, str) else "", response.status_code
                )
            raise TokenRequestError("server_error", f"token endpoint answered {response.status_code}", 502)
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
        self._current = token
        self._retry_at = 0.0
        return token

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
        task = self._inflight
        self._inflight = None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()

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
