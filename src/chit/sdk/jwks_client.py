"""The issuer's signing keys, fetched over HTTP (discovery, then JWKS) and kept in memory.

Rules (DESIGN §4, SDK contract):

* keys are fetched on first need, through ``/.well-known/openid-configuration`` (whose ``issuer`` must
  be exactly the configured one) unless a ``jwks_uri`` is given;
* the JWKS is kept for its ``Cache-Control: max-age`` (at least the cool-down, at most one hour,
  five minutes when it says nothing); from three quarters of that age on, a request starts one
  background fetch and the keys in hand keep serving meanwhile. Renewing early is what lets a key
  that the server published and will sign with once max-age has passed be known before its first
  token arrives (``chit keys rotate``);
* an unknown ``kid`` triggers a refetch at most once per cool-down (10 s), whoever asks;
* a failed fetch, an error status, a body that is not JSON or a JWKS with no usable key never
  replaces the keys in hand: the last known good keys keep serving while the auth server is down;
* concurrent callers share one fetch (single flight); nothing needs starting, ``aclose`` cancels a
  background fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import httpx

from chit.core.jwt import JwksError, VerificationKey, parse_jwks
from chit.core.keys import ALGORITHMS
from chit.errors import ChitError

log = logging.getLogger("chit.sdk")

DISCOVERY_PATH = "/.well-known/openid-configuration"
DEFAULT_MAX_AGE = 300.0
MAX_AGE_CAP = 3600.0
REFRESH_COOLDOWN = 10.0
FIRST_LOAD_RETRY = 1.0  # while no key was ever obtained, try again sooner than the cool-down
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_SIZE = 512 * 1024
RENEW_AT = 0.75  # of the keys' lifetime: renew before a scheduled key starts signing


class KeysUnavailableError(ChitError):
    """No signing key could be obtained from the issuer yet, so no token can be checked (answer 503)."""

    retry_after = int(FIRST_LOAD_RETRY) or 1


class FetchError(ChitError):
    """A discovery or JWKS fetch that gave nothing usable."""


def max_age(cache_control: str | None) -> float | None:
    """``max-age`` from a Cache-Control header (0 for no-store/no-cache), None when absent."""
    if not cache_control:
        return None
    result: float | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            try:
                result = float(int(value.strip().strip('"')))
            except ValueError:
                return None
    return result


class HttpGetter:
    """GETs small JSON documents with a size cap, on the caller's client or a short-lived one."""

    def __init__(self, http_client: httpx.AsyncClient | None, timeout: float) -> None:
        self.http_client = http_client
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self.http_client is not None:
            yield self.http_client
            return
        # A client per fetch: fetches are rare, and a client is bound to the event loop it first ran on.
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        async with httpx.AsyncClient(timeout=self.timeout, verify=self._ssl) as client:
            yield client

    async def get_json(self, url: str) -> tuple[Any, str | None]:
        async with self.client() as client:
            request = client.build_request("GET", url, headers={"Accept": "application/json"}, timeout=self.timeout)
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    raise FetchError(f"{url} answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_SIZE:
                        raise FetchError(f"{url} answered more than {MAX_DOCUMENT_SIZE} bytes")
            finally:
                await response.aclose()
        try:
            return json.loads(body), response.headers.get("cache-control")
        except (ValueError, RecursionError) as exc:
            raise FetchError(f"{url} did not answer JSON") from exc


def is_secure_url(url: str) -> bool:
    """https, or plain http to a loopback host (development and tests), as the server's issuer rule."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise FetchError("discovery has no jwks_uri")
    if not is_secure_url(url):
        raise FetchError(f"jwks_uri {url[:200]!r} is not https")
    return url


class JwksClient:
    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        algorithms: Collection[str] = ALGORITHMS,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        max_age_cap: float = MAX_AGE_CAP,
        refresh_cooldown: float = REFRESH_COOLDOWN,
        clock: Callable[[], float],
        on_keys_removed: Callable[[], None] | None = None,
    ) -> None:
        for url in (issuer, jwks_uri):
            if url is not None and not is_secure_url(url):
                # keys fetched in clear text can be swapped on the way, and every token forged with them
                raise ValueError(f"{url!r} must be https (plain http only on loopback hosts)")
        self.issuer = issuer
        self.algorithms = tuple(algorithms)
        self.max_age_cap = max_age_cap
        self.refresh_cooldown = refresh_cooldown
        self.clock = clock
        self.on_keys_removed = on_keys_removed
        self._getter = HttpGetter(http_client, timeout)
        self._configured_jwks_uri = jwks_uri
        self._jwks_uri = jwks_uri
        self._keys: Mapping[str, VerificationKey] = {}
        self._loaded = False
        self._renew_at = 0.0
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self.fetches = 0  # attempts, for tests and metrics
        self.last_error: str | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def keys(self) -> Mapping[str, VerificationKey]:
        return self._keys

    def find(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    def _cooled_down(self, now: float) -> bool:
        if self._last_attempt is None:
            return True
        wait = self.refresh_cooldown if self._loaded else min(self.refresh_cooldown, FIRST_LOAD_RETRY)
        return now - self._last_attempt >= wait

    def refresh_if_stale(self, now: float | None = None) -> None:
        """Renew aging keys in the background; the keys in hand keep serving meanwhile."""
        if now is None:
            now = self.clock()
        if now >= self._renew_at and self._loaded and self._cooled_down(now):
            self._start_fetch()

    async def refresh_for_unknown_kid(self, kid: str) -> bool:
        """Refetch for a kid nobody knows, at most once per cool-down; True when the kid is now known.

        Raises ``KeysUnavailableError`` when no key was ever obtained."""
        task = self._current_fetch()
        if task is None and self._cooled_down(self.clock()):
            task = self._start_fetch()
        if task is not None:
            await asyncio.shield(task)
        if not self._loaded:
            raise KeysUnavailableError(f"no signing keys from {self.issuer} yet: {self.last_error}")
        return kid in self._keys

    async def refresh(self) -> bool:
        """Fetch now (sharing a fetch already under way); True when new keys were installed."""
        task = self._current_fetch() or self._start_fetch()
        return await asyncio.shield(task)

    def _current_fetch(self) -> asyncio.Task[bool] | None:
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _start_fetch(self) -> asyncio.Task[bool]:
        self._last_attempt = self.clock()
        self.fetches += 1
        task = asyncio.get_running_loop().create_task(self._fetch(), name=f"chit-jwks-{self.issuer}")
        self._inflight = task
        return task

    async def _discover(self) -> str:
        if self._jwks_uri is not None:
            return self._jwks_uri
        document, _ = await self._getter.get_json(self.issuer.rstrip("/") + DISCOVERY_PATH)
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchError(f"discovery document is not {self.issuer}'s")
        self._jwks_uri = _check_url(document.get("jwks_uri"))
        return self._jwks_uri

    async def _fetch(self) -> bool:
        now = self.clock()
        try:
            uri = await self._discover()
            try:
                document, cache_control = await self._getter.get_json(uri)
                keys = parse_jwks(document, algorithms=self.algorithms)
            except (FetchError, JwksError, httpx.HTTPError):
                self._jwks_uri = self._configured_jwks_uri  # rediscover next time: the keys may have moved
                raise
        except (FetchError, JwksError, httpx.HTTPError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "could not refresh signing keys of %s (%s); keeping %d known keys",
                self.issuer,
                self.last_error,
                len(self._keys),
            )
            if self._loaded:
                self._renew_at = now + self.refresh_cooldown
            return False
        age = max_age(cache_control)
        ttl = DEFAULT_MAX_AGE if age is None else age
        removed = not set(self._keys) <= set(keys)
        self._keys = keys
        self._loaded = True
        self._renew_at = now + RENEW_AT * min(max(ttl, self.refresh_cooldown), self.max_age_cap)
        self.last_error = None
        if removed and self.on_keys_removed is not None:
            self.on_keys_removed()
        return True

    async def aclose(self) -> None:
        task = self._inflight
        self._inflight = None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
