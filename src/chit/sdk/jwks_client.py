"""The issuer's public keys, fetched over HTTP and kept in memory: the JWT signing keys (discovery, then
JWKS: ``JwksClient``), the chit root keys (discovery's ``biscuit_root_keys``, ``biscuit_public_keys``:
``RootKeysClient``) and the registered services' public keys (discovery's ``service_keys_uri``:
``ServiceKeysClient``, what proves the path a chit took).

Rules (DESIGN §4, SDK contract), the same for both:

* keys are fetched on first need, through ``/.well-known/openid-configuration`` (whose ``issuer`` must
  be exactly the configured one) unless a ``jwks_uri`` is given;
* the JWKS is kept for its ``Cache-Control: max-age`` (at least the cool-down, at most one hour,
  five minutes when it says nothing); from three quarters of that age on, a request starts one
  background fetch and the keys in hand keep serving meanwhile. Renewing early is what lets a key
  that the server published and will sign with once max-age has passed be known before its first
  token arrives (``chit keys rotate``);
* an unknown ``kid`` (root key id, service key) triggers a refetch at most once per cool-down (10 s), whoever asks;
* a failed fetch, an error status, a body that is not JSON or a JWKS with no usable key never
  replaces the keys in hand: the last known good keys keep serving while the auth server is down;
* concurrent callers share one fetch (``chit.sdk.fetch.SingleFlight``, which also keeps the keys
  through a failure); nothing needs starting, ``aclose`` cancels a background fetch;
* a key the revocation feed revoked (``ban``: a ``key`` event) verifies nothing more, even while the
  issuer still publishes it, and is never worth a refetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from typing import Any, Generic, TypeVar

import httpx

from chit.core.chit_authorizer import RootKeys, parse_root_keys, public_key
from chit.core.jwt import VerificationKey, parse_jwks
from chit.core.keys import ALGORITHMS
from chit.core.paths import OPENID_CONFIGURATION_PATH
from chit.errors import FetchError, JwksError
from chit.errors import KeysUnavailableError as KeysUnavailableError
from chit.sdk.fetch import FETCH_TIMEOUT, Fetched, HttpGetter, Reply, SingleFlight, is_secure_url

DEFAULT_MAX_AGE = 300.0
MAX_AGE_CAP = 3600.0
REFRESH_COOLDOWN = 10.0
FIRST_LOAD_RETRY = 1.0  # while no key was ever obtained, try again sooner than the cool-down
RENEW_AT = 0.75  # of the keys' lifetime: renew before a scheduled key starts signing
ROOT_KEY_PREFIX = "root-"  # the revocation feed names chit root key ``n`` ``root-<n>``
Keys = Mapping[str, VerificationKey]
K = TypeVar("K")


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


class _PublishedKeys(Generic[K]):
    """Keys ``what`` published by ``issuer``, fetched by ``_load`` and kept by the rules above."""

    def __init__(
        self,
        issuer: str,
        what: str,
        *,
        urls: tuple[str | None, ...] = (),
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        max_age_cap: float = MAX_AGE_CAP,
        refresh_cooldown: float = REFRESH_COOLDOWN,
        clock: Callable[[], float],
        on_keys_removed: Callable[[], None] | None = None,
    ) -> None:
        for url in (issuer, *urls):
            if url is not None and not is_secure_url(url):
                # keys fetched in clear text can be swapped on the way, and every token forged with them
                raise ValueError(f"{url!r} must be https (plain http only on loopback hosts)")
        self.issuer = issuer
        self.what = what
        self.max_age_cap = max_age_cap
        self.refresh_cooldown = refresh_cooldown
        self.clock = clock
        self.on_keys_removed = on_keys_removed
        self._getter = HttpGetter(http_client, timeout)
        self._keys: SingleFlight[K] = SingleFlight(
            f"the {what} of {issuer}",
            self._fetch,
            errors=(FetchError, JwksError, httpx.HTTPError),
            retry_pause=refresh_cooldown,
            clock=clock,
        )
        self.banned: set[str] = set()  # key ids revoked by the feed: for the life of the process

    def ban(self, key_id: str) -> None:
        """Refuse every token the key ``key_id`` signed from now on (a revoked key)."""
        self.banned.add(key_id)

    @property
    def loaded(self) -> bool:
        return self._keys.value is not None

    @property
    def fetches(self) -> int:
        """Attempts, for tests and metrics."""
        return self._keys.attempts

    @property
    def last_error(self) -> str | None:
        error = self._keys.error
        return None if error is None else f"{type(error).__name__}: {error}"

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

    async def _refresh_for_unknown(self) -> K:
        """Refetch for a key nobody knows, at most once per cool-down; the keys then in hand.

        Raises ``KeysUnavailableError`` when no key was ever obtained."""
        task = self._keys.running()
        if task is None and self._cooled_down(self.clock()):
            task = self._keys.start()
        if task is not None:
            await asyncio.shield(task)
        keys = self._keys.value
        if keys is None:
            raise KeysUnavailableError(f"no {self.what} from {self.issuer} yet: {self.last_error}")
        return keys

    async def refresh(self) -> bool:
        """Fetch now (sharing a fetch already under way); True when new keys were installed."""
        return await self._keys.refresh()

    async def _fetch(self) -> Fetched[K]:
        now = self.clock()
        keys, reply = await self._load()
        age = max_age(reply.headers.get("cache-control"))
        ttl = DEFAULT_MAX_AGE if age is None else age
        held = self._keys.value
        if held is not None and self._removed(held, keys) and self.on_keys_removed is not None:
            self.on_keys_removed()  # the new keys are installed right after, with no await in between
        self._installing(keys)
        return Fetched(keys, renew_at=now + RENEW_AT * min(max(ttl, self.refresh_cooldown), self.max_age_cap))

    async def _load(self) -> tuple[K, Reply]:
        raise NotImplementedError

    def _removed(self, held: K, new: K) -> bool:
        """Whether ``new`` withdraws a key of ``held`` (tokens it verified must leave the cache)."""
        raise NotImplementedError

    def _installing(self, keys: K) -> None:
        """Called with keys about to be installed."""

    async def aclose(self) -> None:
        await self._keys.aclose()


class JwksClient(_PublishedKeys[Keys]):
    """The JWT signing keys: ``/.well-known/openid-configuration`` gives ``jwks_uri`` (unless given), which
    gives the JWKS."""

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
        super().__init__(
            issuer,
            "signing keys",
            urls=(jwks_uri,),
            http_client=http_client,
            timeout=timeout,
            max_age_cap=max_age_cap,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=on_keys_removed,
        )
        self.algorithms = tuple(algorithms)
        self._configured_jwks_uri = jwks_uri
        self._jwks_uri = jwks_uri

    @property
    def keys(self) -> Keys:
        return self._keys.value or {}

    def find(self, kid: str) -> VerificationKey | None:
        keys = self._keys.value
        if keys is None or (self.banned and kid in self.banned):
            return None
        return keys.get(kid)

    async def refresh_for_unknown_kid(self, kid: str) -> bool:
        """Refetch for a kid nobody knows, at most once per cool-down; True when the kid is now known.

        Raises ``KeysUnavailableError`` when no key was ever obtained."""
        if kid in self.banned:
            return False  # revoked: known or not, it verifies nothing
        return kid in await self._refresh_for_unknown()

    async def _load(self) -> tuple[Keys, Reply]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._getter.discover(self.issuer, "jwks_uri")
        try:
            reply = await self._getter.send("GET", self._jwks_uri)
            keys = parse_jwks(reply.document(), algorithms=self.algorithms)
        except (FetchError, JwksError, httpx.HTTPError):
            self._jwks_uri = self._configured_jwks_uri  # rediscover next time: the keys may have moved
            raise
        return keys, reply

    def _removed(self, held: Keys, new: Keys) -> bool:
        return not set(held) <= set(new)


class RootKeysClient(_PublishedKeys[RootKeys]):
    """The chit root keys, from the issuer's discovery document: ``biscuit_root_keys`` (``[{"id": n,
    "public_key": "ed25519/<hex>"}]``, what a chit's root key id names) and ``biscuit_public_keys`` (keys
    without an id, tried in turn). A document without them yields no key: every chit is then refused.
    ``on_keys`` hears of every key set installed (``chit.sdk.chits`` keeps them to attenuate with)."""

    def __init__(
        self,
        issuer: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        max_age_cap: float = MAX_AGE_CAP,
        refresh_cooldown: float = REFRESH_COOLDOWN,
        clock: Callable[[], float],
        on_keys_removed: Callable[[], None] | None = None,
        on_keys: Callable[[RootKeys], None] | None = None,
    ) -> None:
        super().__init__(
            issuer,
            "chit root keys",
            http_client=http_client,
            timeout=timeout,
            max_age_cap=max_age_cap,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=on_keys_removed,
        )
        self.on_keys = on_keys
        self._allowed: tuple[RootKeys, int, RootKeys] | None = None  # (published, bans, what remains of them)

    @property
    def keys(self) -> RootKeys:
        return self._keys.value or RootKeys()

    def ban(self, key_id: str) -> None:
        """Refuse every chit the root key ``key_id`` signed: ``root-<n>`` (as the feed names root key ``n``),
        or its ``ed25519/<hex>`` text."""
        super().ban(key_id)
        self._allowed = None

    def _banned_ids(self) -> set[int]:
        """The root key ids banned (``root-<n>``)."""
        ids = (key_id.removeprefix(ROOT_KEY_PREFIX) for key_id in self.banned if key_id.startswith(ROOT_KEY_PREFIX))
        return {int(n) for n in ids if n.isdigit()}

    def candidates(self, key_id: int | None) -> tuple[Any, ...]:
        """The root public keys a chit naming ``key_id`` may be signed with (none: unknown or revoked)."""
        keys = self._keys.value
        if keys is None:
            return ()
        if self.banned:
            keys = self._without_banned(keys)
        return keys.candidates(key_id)

    def _without_banned(self, keys: RootKeys) -> RootKeys:
        """``keys`` less the revoked ones, worked out once per key set and ban."""
        allowed = self._allowed
        if allowed is not None and allowed[0] is keys and allowed[1] == len(self.banned):
            return allowed[2]
        banned, ids = self.banned, self._banned_ids()
        texts = {text for key_id, text in keys.by_id.items() if key_id in ids} | banned
        remaining = RootKeys(
            {key_id: text for key_id, text in keys.by_id.items() if text not in texts},
            tuple(text for text in keys.unlabeled if text not in texts),
        )
        self._allowed = (keys, len(banned), remaining)
        return remaining

    def is_banned(self, key_id: int | None) -> bool:
        """Whether a chit naming root key ``key_id`` names a revoked one."""
        if key_id is None or not self.banned:
            return False
        keys = self._keys.value
        return key_id in self._banned_ids() or (keys is not None and keys.by_id.get(key_id) in self.banned)

    async def refresh_for_unknown_root_key(self, key_id: int | None) -> bool:
        """Refetch for a root key id nobody knows, at most once per cool-down; True when it is now known.

        Raises ``KeysUnavailableError`` when no discovery document was ever obtained."""
        if self.is_banned(key_id):
            return False  # revoked: known or not, it verifies nothing
        await self._refresh_for_unknown()
        return bool(self.candidates(key_id))

    async def _load(self) -> tuple[RootKeys, Reply]:
        reply = await self._getter.send("GET", self.issuer.rstrip("/") + OPENID_CONFIGURATION_PATH)
        document = reply.document()
        if not isinstance(document, Mapping) or document.get("issuer") != self.issuer:
            raise FetchError(f"discovery document is not {self.issuer}'s")
        return parse_root_keys(document), reply

    def _removed(self, held: RootKeys, new: RootKeys) -> bool:
        return not held.texts() <= new.texts() or any(new.by_id.get(n, t) != t for n, t in held.by_id.items())

    def _installing(self, keys: RootKeys) -> None:
        if self.on_keys is not None:
            self.on_keys(keys)


class ServiceKeys(dict[str, frozenset[str]]):
    """The registered services' public keys: key text (``ed25519/<hex>``, canonical) -> the service ids
    published with it."""


def parse_service_keys(document: object) -> ServiceKeys:
    """The keys of a ``service_keys_uri`` document (``{"keys": [{"service": id, "public_key": "ed25519/<hex>"}]}``);
    entries that are not usable keys are skipped; a document without a ``keys`` list is ``FetchError``."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise FetchError("service keys document has no keys list")
    found: dict[str, set[str]] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        service, text = entry.get("service"), entry.get("public_key")
        if not isinstance(service, str) or not service or not isinstance(text, str):
            continue
        try:
            canonical = str(public_key(text))
        except ValueError:
            continue
        found.setdefault(canonical, set()).add(service)
    return ServiceKeys({key: frozenset(services) for key, services in found.items()})


class ServiceKeysClient(_PublishedKeys[ServiceKeys]):
    """The registered services' public keys, from discovery's ``service_keys_uri`` (unless given): what a
    third-party block ``through("<id>")`` must be signed with to prove that the chit came through ``<id>``."""

    def __init__(
        self,
        issuer: str,
        *,
        service_keys_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        max_age_cap: float = MAX_AGE_CAP,
        refresh_cooldown: float = REFRESH_COOLDOWN,
        clock: Callable[[], float],
        on_keys_removed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            issuer,
            "service keys",
            urls=(service_keys_uri,),
            http_client=http_client,
            timeout=timeout,
            max_age_cap=max_age_cap,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=on_keys_removed,
        )
        self._configured_uri = service_keys_uri
        self._uri = service_keys_uri

    @property
    def keys(self) -> ServiceKeys:
        return self._keys.value or ServiceKeys()

    def services_of(self, key: str) -> frozenset[str]:
        """The services published with the public key ``key`` (none: unknown, or revoked by the feed)."""
        keys = self._keys.value
        if keys is None or (self.banned and key in self.banned):
            return frozenset()
        return keys.get(key, frozenset())

    async def refresh_for_unknown_signer(self, key: str) -> bool:
        """Refetch for a signer nobody knows, at most once per cool-down; True when it is now known.

        Raises ``KeysUnavailableError`` when no key list was ever obtained."""
        return key in await self._refresh_for_unknown()

    async def _load(self) -> tuple[ServiceKeys, Reply]:
        if self._uri is None:
            self._uri = await self._getter.discover(self.issuer, "service_keys_uri")
        try:
            reply = await self._getter.send("GET", self._uri)
            keys = parse_service_keys(reply.document())
        except (FetchError, httpx.HTTPError):
            self._uri = self._configured_uri  # rediscover next time
            raise
        return keys, reply

    def _removed(self, held: ServiceKeys, new: ServiceKeys) -> bool:
        return any(not services <= new.get(key, frozenset()) for key, services in held.items())
