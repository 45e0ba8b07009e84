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
* concurrent callers share one fetch (``chit.sdk.fetch.SingleFlight``, which also keeps the keys
  through a failure); nothing needs starting, ``aclose`` cancels a background fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping

import httpx

from chit.core.jwt import VerificationKey, parse_jwks
from chit.core.keys import ALGORITHMS
from chit.errors import FetchError, JwksError
from chit.errors import KeysUnavailableError as KeysUnavailableError
from chit.sdk.fetch import FETCH_TIMEOUT, Fetched, HttpGetter, SingleFlight, is_secure_url

DEFAULT_MAX_AGE = 300.0
MAX_AGE_CAP = 3600.0
REFRESH_COOLDOWN = 10.0
FIRST_LOAD_RETRY = 1.0  # while no key was ever obtained, try again sooner than the cool-down
RENEW_AT = 0.75  # of the keys' lifetime: renew before a scheduled key starts signing
Keys = Mapping[str, VerificationKey]


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
        self._keys: SingleFlight[Keys] = SingleFlight(
            f"the signing keys of {issuer}",
            self._fetch,
            errors=(FetchError, JwksError, httpx.HTTPError),
            retry_pause=refresh_cooldown,
            clock=clock,
        )

    @property
    def loaded(self) -> bool:
        return self._keys.value is not None

    @property
    def keys(self) -> Keys:
        return self._keys.value or {}

    @property
    def fetches(self) -> int:
        """Attempts, for tests and metrics."""
        return self._keys.attempts

    @property
    def last_error(self) -> str | None:
        error = self._keys.error
        return None if error is None else f"{type(error).__name__}: {error}"

    def find(self, kid: str) -> VerificationKey | None:
        keys = self._keys.value
        return None if keys is None else keys.get(kid)

    def _cooled_down(self, now: float) -> bool:
        wait = self.refresh_cooldown if self.loaded else min(self.refresh_cooldown, FIRST_LOAD_RETRY)
        return self._keys.waited(wait, now)

    def refresh_if_stale(self, now: float | None = None) -> None:
        """Renew aging keys in the background; the keys in hand keep serving meanwhile."""
        keys = self._keys
        if now is None:
            now = self.clock()
        if now < keys.renew_at:
            return
        if keys.value is not None and self._cooled_down(now):
            keys.start()

    async def refresh_for_unknown_kid(self, kid: str) -> bool:
        """Refetch for a kid nobody knows, at most once per cool-down; True when the kid is now known.

        Raises ``KeysUnavailableError`` when no key was ever obtained."""
        task = self._keys.running()
        if task is None and self._cooled_down(self.clock()):
            task = self._keys.start()
        if task is not None:
            await asyncio.shield(task)
        keys = self._keys.value
        if keys is None:
            raise KeysUnavailableError(f"no signing keys from {self.issuer} yet: {self.last_error}")
        return kid in keys

    async def refresh(self) -> bool:
        """Fetch now (sharing a fetch already under way); True when new keys were installed."""
        return await self._keys.refresh()

    async def _fetch(self) -> Fetched[Keys]:
        now = self.clock()
        if self._jwks_uri is None:
            self._jwks_uri = await self._getter.discover(self.issuer, "jwks_uri")
        try:
            reply = await self._getter.send("GET", self._jwks_uri)
            keys = parse_jwks(reply.document(), algorithms=self.algorithms)
        except (FetchError, JwksError, httpx.HTTPError):
            self._jwks_uri = self._configured_jwks_uri  # rediscover next time: the keys may have moved
            raise
        age = max_age(reply.headers.get("cache-control"))
        ttl = DEFAULT_MAX_AGE if age is None else age
        held = self._keys.value
        if held is not None and not set(held) <= set(keys) and self.on_keys_removed is not None:
            self.on_keys_removed()  # the new keys are installed right after, with no await in between
        return Fetched(keys, renew_at=now + RENEW_AT * min(max(ttl, self.refresh_cooldown), self.max_age_cap))

    async def aclose(self) -> None:
        await self._keys.aclose()
