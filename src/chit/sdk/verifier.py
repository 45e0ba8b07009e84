"""The framework-free core of the service SDK: bearer credentials in, a ``Principal`` or an ``AuthError`` out.

``TokenVerifier.verify`` checks a token locally, with the issuer's public keys held in memory
(``chit.sdk.jwks_client``), and consults the revocation check; a verified token is kept in a bounded
cache until it expires, so a token seen again costs a dictionary lookup. It takes both kinds: a JWT
access token (three dot-separated parts) and a chit (a Biscuit in base64url, ``kind == "chit"``: its
root key is the one its root key id names in discovery's ``biscuit_root_keys``; every block's
revocation id is checked; ``chit.core.chit_authorizer`` says what is verified and bounded). A chit's
third-party blocks ``through("<id>")`` prove its path when signed by the key published for ``<id>`` at
discovery's ``service_keys_uri`` (fetched on first need, an unknown signer refetches at most once per
cool-down): ``Principal.through``, ``came_through``, ``require_path``.

``authorize`` requires a route's permissions and, for a chit, runs its checks with the request's facts
(per request, cached chit or not): checks that need a resource or an owner wait for the route body's
decisions (``Principal.require(..., resource=...)``, ``require_owner``), which run every check again
with the facts they state. Leeway does not apply to a chit: its time checks (the authority's expiry and
any an attenuation added) are datalog, evaluated against this host's clock.

Given the service's ``identity``, the verifier follows the auth server's revocation feed
(``chit.sdk.revocation_feed``; ``redis_url`` adds Redis push) into a ``RevocationList`` that it consults
on every request, cached tokens included; a ``key`` revocation bans the key in the key clients and empties
the cache. ``await verifier.start()`` (or ``FastAPI(lifespan=verifier.lifespan)``, or ``async with``)
bootstraps the list before traffic; otherwise the first ``verify`` starts it and waits for it a bounded
while (``BOOTSTRAP_TIMEOUT``), then goes on stale. While the list has not been confirmed current for
``max_staleness`` seconds, ``authorize`` refuses what ``fail_closed`` names (``refuse_writes`` by
default: every method but GET, HEAD and OPTIONS) with ``RevocationsStaleError``, answered 503 with
``Retry-After``; reads go on with the list in hand. Counts for Prometheus are kept in plain integers
(``chit.sdk.metrics``).

Given the service's own ``service_key`` (``ServiceKey``, what it signs its hops with), ``start`` checks that
the issuer publishes that key for the service: a key that is not the one registered cannot prove any hop.
Trouble with the settings is told in words that name the fix (``chit.sdk.settings``): an issuer that
cannot be reached, a client secret it refuses (logged, and tried again), a service key it does not
publish (``lifespan`` ends the process; found later, it is logged as an error).

Verification is CPU-bound and holds the GIL, so it runs inline in the caller's event loop: a thread
pool would only add hand-off cost. Adapters (``chit.sdk.fastapi``, ``chit.sdk.starlette``) only translate
HTTP to ``bearer_token`` / ``verify`` / ``authorize`` and errors back to the answers of ``chit.answers``
(``bearer_token``, ``challenge`` and the SDK's errors are imported here for ``chit.sdk``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypedDict

import httpx

from chit.answers import bearer_token as bearer_token
from chit.answers import challenge as challenge
from chit.core.chit_authorizer import (
    ChitAuthorizer,
    ChitLimits,
    ChitRequest,
    UnknownRootKeyError,
    VerifiedChit,
    is_chit,
)
from chit.core.jwt import DEFAULT_LEEWAY, MAX_TOKEN_SIZE, AccessTokenDecoder, UnknownKeyError
from chit.core.keys import ALGORITHMS
from chit.core.paths import TOKEN_PATH
from chit.errors import ConfigurationError, InsufficientScopeError, InvalidTokenError, RevocationsStaleError
from chit.errors import InvalidBearerRequestError as InvalidBearerRequestError
from chit.errors import MissingTokenError as MissingTokenError
from chit.policy.principals import Actor, DecisionSink, Principal, principal_from_claims
from chit.revocation.base import RevocationCheck, TokenRevocationCheck, as_revocation_check
from chit.revocation.list import RevocationList
from chit.sdk.cache import DEFAULT_MAX_ENTRIES, VerifiedTokenCache
from chit.sdk.chits import KNOWN_ROOT_KEYS, ServiceKey
from chit.sdk.decisions import DecisionLog
from chit.sdk.fetch import FETCH_TIMEOUT
from chit.sdk.identity import ServiceIdentity
from chit.sdk.jwks_client import (
    MAX_AGE_CAP,
    REFRESH_COOLDOWN,
    JwksClient,
    KeysUnavailableError,
    RootKeysClient,
    ServiceKeysClient,
)
from chit.sdk.metrics import VerifierStats, measure
from chit.sdk.revocation_feed import BOOTSTRAP_TIMEOUT, POLL_INTERVAL, RevocationFeed
from chit.sdk.settings import explain, unregistered_service_key

log = logging.getLogger("chit.sdk")

REVOKED = "token has been revoked"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_MAX_STALENESS = 30.0
BEARER_MEMORY = 1024  # Authorization values remembered by ``token_of``; forgotten all at once when full
BEARER_MEMORY_BYTES = 2 * 1024 * 1024  # ... and their bytes in all: a flood of large values stays small
STARTUP_FAILURE = 3  # the exit status uvicorn gives a failed startup; gunicorn stops booting workers on it
KEY_CHECK_RETRY = (1.0, 30.0)  # first and longest pause between tries to check the service key
StalePolicy = Callable[[str | None, frozenset[str]], bool]
"""Whether to refuse a request (its method, None when unknown, and the permissions its route requires)
while the revocation list is stale. The policy is asked once, where the request is authorized: the
permissions are those of FastAPI's ``Security(verifier, scopes=[...])``. Behind the Starlette middleware,
and for what a route body decides later (``principal.require``), it is asked with none: a policy that
refuses by permission must also refuse by method (as ``refuse_writes`` does) to hold there."""


def refuse_writes(method: str | None, permissions: frozenset[str]) -> bool:
    """The default ``fail_closed`` policy: while the revocation list is stale, refuse every request but a
    GET, HEAD or OPTIONS; a request whose method is not known (a WebSocket, a call outside HTTP) counts
    as a write. A write done with a token revoked meanwhile cannot be taken back; a read can be retried."""
    return method is None or method.upper() not in SAFE_METHODS


class VerifierOptions(TypedDict, total=False):
    """``TokenVerifier``'s keyword options, for adapters that add their own."""

    algorithms: Collection[str]
    leeway: float
    max_token_size: int
    revocation: RevocationCheck | TokenRevocationCheck | None
    identity: ServiceIdentity | None
    redis_url: str | None
    max_staleness: float
    fail_closed: StalePolicy
    cache_size: int
    jwks_uri: str | None
    token_url: str | None
    http_client: httpx.AsyncClient | None
    timeout: float
    jwks_max_age: float
    refresh_cooldown: float
    decisions: DecisionSink | bool
    clock: Callable[[], float]
    chit_limits: ChitLimits | None
    service_key: ServiceKey | None


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience (this service's id).

    ``issuer`` is matched exactly against ``iss``; ``audience`` must be among ``aud``. ``leeway``
    (seconds) applies to ``exp``, ``nbf`` and ``iat``; tokens above ``max_token_size`` bytes are refused
    before any decoding. ``revocation`` is consulted with each token's ``jti`` and ``sid``, and with
    every revocation id of a chit; ``cache_size`` bounds the verified-token cache (0 turns it off).
    ``decisions`` is where ``require`` decisions go: a ``DecisionLog`` by default, any ``DecisionSink``, or
    False for none. ``chit_limits`` (``ChitLimits``; by default its own, with ``max_token_size``) bound the
    chits accepted.

    ``identity`` (the service's ``ServiceIdentity``) makes it follow the issuer's revocation feed with the
    service's own token (``redis_url``: by Redis, with the feed as catch-up); ``revocations`` is the list it
    keeps, ``feed`` the follower. Past ``max_staleness`` seconds without the feed confirming the list,
    ``authorize`` refuses what ``fail_closed(method, permissions)`` names (``refuse_writes``).
    ``revocation``, a list of the service's own, is consulted as well.

    ``service_key`` (the service's ``ServiceKey``) is checked against the keys the issuer publishes when
    the verifier starts: ``start`` raises ``ConfigurationError`` naming the fix when the issuer publishes
    another key for the service (or none); while the issuer cannot be reached, the check is tried again in
    the background, and a mismatch found then is logged as an error.
    """

    refusal: type[InsufficientScopeError] = InsufficientScopeError
    """What the principals it returns raise when a ``require*`` is refused (``Principal.refusal``)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        algorithms: Collection[str] = ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        max_token_size: int = MAX_TOKEN_SIZE,
        revocation: RevocationCheck | TokenRevocationCheck | None = None,
        identity: ServiceIdentity | None = None,
        redis_url: str | None = None,
        max_staleness: float = DEFAULT_MAX_STALENESS,
        fail_closed: StalePolicy = refuse_writes,
        cache_size: int = DEFAULT_MAX_ENTRIES,
        jwks_uri: str | None = None,
        token_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        jwks_max_age: float = MAX_AGE_CAP,
        refresh_cooldown: float = REFRESH_COOLDOWN,
        decisions: DecisionSink | bool = True,
        clock: Callable[[], float] = time.time,
        chit_limits: ChitLimits | None = None,
        service_key: ServiceKey | None = None,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise TypeError("issuer must be a non-empty string")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.revocation = None if revocation is None else as_revocation_check(revocation)
        self.clock = clock
        self.token_url = token_url or issuer.rstrip("/") + TOKEN_PATH
        self.decoder = AccessTokenDecoder(
            issuer=issuer, audience=audience, leeway=leeway, algorithms=algorithms, max_size=max_token_size
        )
        self.cache: VerifiedTokenCache[Principal] | None = VerifiedTokenCache(cache_size) if cache_size > 0 else None
        self.jwks = JwksClient(
            issuer,
            jwks_uri=jwks_uri,
            algorithms=algorithms,
            http_client=http_client,
            timeout=timeout,
            max_age_cap=jwks_max_age,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=self.cache.clear if self.cache is not None else None,
        )
        self.chits = ChitAuthorizer(issuer, audience, chit_limits or ChitLimits(max_size=max_token_size))
        self.root_keys = RootKeysClient(
            issuer,
            http_client=http_client,
            timeout=timeout,
            max_age_cap=jwks_max_age,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=self.cache.clear if self.cache is not None else None,
            on_keys=lambda keys: KNOWN_ROOT_KEYS.remember(issuer, keys),
        )
        self.service_keys = ServiceKeysClient(
            issuer,
            http_client=http_client,
            timeout=timeout,
            max_age_cap=jwks_max_age,
            refresh_cooldown=refresh_cooldown,
            clock=clock,
            on_keys_removed=self.cache.clear if self.cache is not None else None,
        )
        self.decisions: DecisionSink | None
        if decisions is True:
            self.decisions = DecisionLog()
        elif decisions is False:
            self.decisions = None
        else:
            self.decisions = decisions
        if not max_staleness > 0:
            raise ValueError("max_staleness is a positive number of seconds")
        self.max_staleness = max_staleness  # the feed's, which keeps its ``stale`` flag by it
        self.fail_closed = fail_closed
        self.revocations: RevocationList | None = None
        self.feed: RevocationFeed | None = None
        if identity is not None:
            # kept a leeway past each event's expiry: a token is accepted that long past its exp
            self.revocations = RevocationList(grace=leeway, clock=clock)
            self.revocations.key_listeners.append(self._key_revoked)
            self.feed = RevocationFeed(
                issuer,
                identity,
                self.revocations,
                redis_url=redis_url,
                max_staleness=max_staleness,
                poll_interval=min(POLL_INTERVAL, max_staleness / 3),  # polls confirm well within the bound
                http_client=http_client,
                timeout=timeout,
            )
        elif redis_url is not None:
            raise TypeError("redis_url needs the service's identity to follow the revocation feed with")
        self._refetches: set[asyncio.Task[None]] = set()  # key refetches a key revocation started
        self._bearers: dict[bytes, str] = {}  # raw Authorization value -> its token (``token_of``)
        self._bearer_bytes = 0
        self._max_bearer = max_token_size + len("Bearer ")
        self.service_key = service_key
        self.service_key_checked = service_key is None  # True once the issuer was seen to publish it
        self._key_check: asyncio.Task[None] | None = None
        self._bootstrap_deadline: float | None = None  # after it, verify no longer waits for the bootstrap
        self.stats = VerifierStats()
        measure(self)

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``InvalidTokenError`` (with its reason) for anything else.

        May raise ``KeysUnavailableError`` while no signing key was ever obtained from the issuer."""
        feed = self.feed
        if feed is not None and not feed.bootstrapped:
            await self._wait_for_bootstrap(feed)
        try:
            now = self.clock()
            principal = self._cached(token, now)
            if principal is not None:
                return principal
            started = time.perf_counter()
            if is_chit(token):
                principal = await self._verify_chit(token, now)
            else:
                principal = await self._verify_jwt(token, now)
            self.stats.timed(time.perf_counter() - started)
            return principal
        except InvalidTokenError as exc:
            self.stats.refuse("revoked" if exc.reason == REVOKED else "invalid_token")
            raise
        except KeysUnavailableError:
            self.stats.refuse("keys_unavailable")
            raise

    def token_of(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The bearer token of an ASGI request's raw ``headers`` (``bearer_token`` says which are refused); a
        header value seen before is answered from memory (``BEARER_MEMORY`` values, each no longer than a
        token may be, ``BEARER_MEMORY_BYTES`` in all)."""
        values = [value for name, value in headers if name == b"authorization"]
        if len(values) == 1:
            token = self._bearers.get(values[0])
            if token is not None:
                return token
        token = bearer_token([value.decode("latin-1") for value in values])
        value = values[0]  # bearer_token refuses anything but one value
        size = len(value)
        if size <= self._max_bearer:
            if len(self._bearers) >= BEARER_MEMORY or self._bearer_bytes + size > BEARER_MEMORY_BYTES:
                self._bearers.clear()
                self._bearer_bytes = 0
            self._bearers[value] = token
            self._bearer_bytes += size
        return token

    def verify_cached(self, token: str) -> Principal | None:
        """``verify`` for a token verified before that still stands, without a coroutine: its principal, or
        None when only ``verify`` can answer (not seen before, expired, no cache, the revocation list not yet
        bootstrapped). A revoked token raises ``InvalidTokenError`` here too."""
        feed = self.feed
        if feed is not None and not feed.bootstrapped:
            return None
        try:
            return self._cached(token, self.clock())
        except InvalidTokenError:
            self.stats.refuse("revoked")  # the only refusal of a cached token
            raise

    def _cached(self, token: str, now: float) -> Principal | None:
        cache = self.cache
        if cache is None:
            return None
        principal = cache.get(token, now)
        if principal is not None:
            # also on cache hits: a withdrawn key must empty the cache
            (self.root_keys if principal.chit is not None else self.jwks).refresh_if_stale(now)
            self._check_revocation(principal, token)  # every revocation id of a chit, on every hit
        return principal

    async def _verify_jwt(self, token: str, now: float) -> Principal:
        jwks = self.jwks
        jwks.refresh_if_stale(now)
        cache = self.cache
        try:
            try:
                claims = self.decoder.decode(token, jwks.find, now)
            except UnknownKeyError as exc:
                if exc.kid in jwks.banned:
                    raise InvalidTokenError(REVOKED) from None  # its signing key was revoked
                if not await jwks.refresh_for_unknown_kid(exc.kid):
                    raise
                claims = self.decoder.decode(token, jwks.find, self.clock())
            principal = principal_from_claims(claims, on_decision=self.decisions, token=token, refusal=self.refusal)
        except InvalidTokenError as exc:
            if isinstance(self.decisions, DecisionLog):
                self.decisions.rejected(exc.reason)
            raise
        self._check_revocation(principal, token)
        if cache is not None:
            cache.put(token, principal, claims.exp + self.leeway)
        return principal

    async def _verify_chit(self, token: str, now: float) -> Principal:
        root_keys = self.root_keys
        root_keys.refresh_if_stale(now)
        cache = self.cache
        try:
            try:
                chit = self.chits.read(token, root_keys.candidates, now)
            except UnknownRootKeyError as exc:
                if root_keys.is_banned(exc.key_id):
                    raise InvalidTokenError(REVOKED) from None  # its root key was revoked
                if not await root_keys.refresh_for_unknown_root_key(exc.key_id):
                    raise
                chit = self.chits.read(token, root_keys.candidates, self.clock())
        except InvalidTokenError as exc:
            if isinstance(self.decisions, DecisionLog):
                self.decisions.rejected(exc.reason)
            raise
        through, settled = await self._through(chit)
        authority = chit.authority
        principal = Principal(
            subject=authority.subject,
            client_id=authority.client_id,
            permissions=authority.rights,
            expires_at=datetime.fromtimestamp(chit.expires_at, UTC),
            actors=tuple(Actor(subject, client or None) for subject, client in authority.actors),
            token_id=chit.revocation_ids[0],
            kind="chit",
            session_id=authority.session_id,
            on_decision=self.decisions,
            token=token,
            chit=ChitRequest(chit, self.chits, self.clock),
            through=through,
            refusal=self.refusal,
        )
        self._check_revocation(principal, token)
        if cache is not None and settled:
            cache.put(token, principal, chit.expires_at + 1)  # valid while time <= expires_at, in whole seconds
        return principal

    async def _through(self, chit: VerifiedChit) -> tuple[tuple[str, ...], bool]:
        """The services that proved the chit came through them (a third-party block stating
        ``through("<id>")`` signed by the key published for ``<id>``), in block order; and whether that is
        settled (False while the service keys could never be fetched: the principal is then not cached)."""
        if not chit.vouchers:
            return (), True
        keys = self.service_keys
        keys.refresh_if_stale(self.clock())
        try:
            for signer, _ in chit.vouchers:
                if not keys.loaded or not keys.services_of(signer):
                    await keys.refresh_for_unknown_signer(signer)  # at most once per cool-down
                    break
        except KeysUnavailableError:
            return (), False
        proven = (service for signer, service in chit.vouchers if service in keys.services_of(signer))
        return tuple(dict.fromkeys(proven)), True

    def _check_revocation(self, principal: Principal, token: str) -> None:
        """Refuse a revoked token: by the feed's list, then the service's own check (a chit by any of its
        blocks' revocation ids: revoking one revokes every chit attenuated from it)."""
        revocations = self.revocations
        revocation = self.revocation
        if (revocations is not None and revocations.revokes(principal)) or (
            revocation is not None and revocation.revokes(principal)
        ):
            if self.cache is not None:
                self.cache.discard(token)
            if isinstance(self.decisions, DecisionLog):
                self.decisions.rejected(REVOKED, principal)
            raise InvalidTokenError(REVOKED)

    def _key_revoked(self, key_id: str) -> None:
        """A signing key, a chit root key or a service key was revoked: nothing it signed passes any more."""
        self.jwks.ban(key_id)
        self.root_keys.ban(key_id)
        self.service_keys.ban(key_id)  # a service key replaced: its through() blocks prove nothing any more
        if self.cache is not None:
            self.cache.clear()
        log.warning("key %s of %s was revoked: every token it signed is refused", key_id, self.issuer)
        # the issuer rotated at once: fetch its new keys now, not after the cool-down of a fetch made in
        # the last seconds, so that the first token the new keys sign is accepted
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        clients = (self.service_keys,) if key_id.startswith("ed25519/") else (self.jwks, self.root_keys)
        for client in clients:
            task = loop.create_task(self._refetch(client))
            self._refetches.add(task)
            task.add_done_callback(self._refetches.discard)

    async def _refetch(self, client: JwksClient | RootKeysClient | ServiceKeysClient) -> None:
        try:
            await client.refresh()
        except Exception as exc:  # the keys in hand stay; an unknown kid refetches again after the cool-down
            log.warning("refetching the keys of %s after a key revocation failed: %s", self.issuer, exc)

    def authorize(
        self,
        principal: Principal,
        permissions: Iterable[str],
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> Principal:
        """Require every permission (``InsufficientScopeError`` naming the first one missing) and, for a
        chit, pass its checks with the request's facts (``InsufficientScopeError`` naming the failed check);
        the principal for the route body to decide with (``Principal.for_request``).

        While the revocation list is staler than ``max_staleness``, a request ``fail_closed`` names (by
        its ``method``, None when unknown, and the permissions) is refused with ``RevocationsStaleError``."""
        if not isinstance(permissions, tuple | list):
            permissions = tuple(permissions)  # read more than once below: never a spent iterator
        feed = self.feed
        stale = feed is not None and feed.stale
        try:
            quiet = not _logs_allows(principal.on_decision)  # no Decision built for allows nobody hears of
            authorized = principal.for_request(permissions, method=method, path=path, quiet=quiet)
        except InsufficientScopeError:
            self.stats.refuse("insufficient_scope")  # refused whatever the list says
            raise
        if stale and feed is not None and self.fail_closed(method, frozenset(permissions)):
            self.stats.refuse("revocations_stale")
            raise RevocationsStaleError(feed.staleness(), feed.retry_after())
        self.stats.allowed += 1
        return authorized

    # --- following the revocation feed --------------------------------------------------------------

    async def start(self) -> bool:
        """Check the ``service_key`` against the issuer (``ConfigurationError`` when the issuer publishes
        another one for the service), then bootstrap the revocation list before traffic (with an
        ``identity``): wait up to ``BOOTSTRAP_TIMEOUT`` seconds for it, then keep following in the
        background. False when it could not be done in time: the follower keeps trying, and the list
        counts as stale until then. Without an ``identity`` there is nothing to bootstrap: True."""
        await self._check_service_key_once()
        feed = self.feed
        if feed is None:
            return True
        self._bootstrap_deadline = time.monotonic()  # whoever waits, waits here
        if await feed.start(BOOTSTRAP_TIMEOUT):
            return True
        failure = feed.last_failure
        explained = None if failure is None else explain(failure, self.issuer, feed.identity.client_id)
        log.warning(
            "the revocation list of %s could not be bootstrapped from %s within %.0f s: %s; serving stale",
            self.audience,
            self.issuer,
            BOOTSTRAP_TIMEOUT,
            explained or feed.last_error,
        )
        return False

    # --- the service's own key ------------------------------------------------------------------------

    async def _check_service_key_once(self) -> None:
        """Check the service key now; when the issuer cannot be reached, keep checking in the background."""
        if self.service_key_checked or self._key_check is not None:
            return
        if not await self._check_service_key():
            task = asyncio.get_running_loop().create_task(self._keep_checking_service_key())
            self._key_check = task

    async def _check_service_key(self) -> bool:
        """Whether the check could be made; ``ConfigurationError`` when the issuer publishes another key."""
        key = self.service_key
        if key is None:
            return True
        try:
            await self.service_keys.refresh()
        except Exception as exc:  # the issuer is down or not there yet: its feed follower says so
            log.debug("could not fetch the service keys of %s to check %s's key: %s", self.issuer, key.service_id, exc)
            return False
        if not self.service_keys.loaded:
            return False
        if key.service_id not in self.service_keys.services_of(key.public_key):
            raise ConfigurationError(unregistered_service_key(key.service_id, self.issuer))
        self.service_key_checked = True
        return True

    async def _keep_checking_service_key(self) -> None:
        pause, longest = KEY_CHECK_RETRY
        while True:
            await asyncio.sleep(pause)
            feed = self.feed
            if feed is not None and feed.running:
                await feed.ready()  # the issuer answers its feed first: no fetch to log while it is away
            try:
                if await self._check_service_key():
                    return
            except ConfigurationError as exc:
                log.error("%s", exc)  # serving already: every hop this service signs will be refused
                return
            pause = min(pause * 2, longest)

    async def _wait_for_bootstrap(self, feed: RevocationFeed) -> None:
        """Start the follower if nobody did, and wait for its bootstrap until ``BOOTSTRAP_TIMEOUT`` after
        the first request; past that, requests go on with the list stale."""
        deadline = self._bootstrap_deadline
        if deadline is None:
            deadline = self._bootstrap_deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
            feed.begin()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await feed.ready(remaining)

    def lifespan(self, app: object) -> AbstractAsyncContextManager[None]:
        """For ``FastAPI(lifespan=verifier.lifespan)`` (or Starlette's): bootstrap the revocation list
        before the first request, stop following at shutdown. A ``service_key`` the issuer does not publish
        for the service ends the process at startup, the fix logged as an error, with exit status 3 (as
        uvicorn's own failed startup): a service that cannot prove its hops cannot do its job."""
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        try:
            await self.start()
        except ConfigurationError as exc:
            # a startup error would reach the log as a traceback: say what to fix and end the process
            log.error("%s", exc)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(STARTUP_FAILURE)
        try:
            yield
        finally:
            await self.aclose()

    def revocation_figures(self) -> tuple[int, float, int] | None:
        """(list size, staleness in seconds, events applied) while following a feed, for the metrics."""
        if self.feed is None or self.revocations is None:
            return None
        return self.revocations.size, self.feed.staleness(), self.revocations.applied

    async def aclose(self) -> None:
        """Stop a background key fetch and the revocation follower; the verifier stays usable (a later call
        fetches again; ``start`` follows the feed again)."""
        await self.jwks.aclose()
        await self.root_keys.aclose()
        await self.service_keys.aclose()
        task, self._key_check = self._key_check, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if self.feed is not None:
            await self.feed.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _logs_allows(sink: DecisionSink | None) -> bool:
    """Whether ``sink`` wants to hear of allowed decisions now: anything but the decision log with its allow
    level off (DEBUG, by default) might."""
    return sink is not None and (type(sink) is not DecisionLog or sink.logs_allows())
