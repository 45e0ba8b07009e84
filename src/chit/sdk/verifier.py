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

Verification is CPU-bound and holds the GIL, so it runs inline in the caller's event loop: a thread
pool would only add hand-off cost. Adapters (``chit.sdk.fastapi``, ``chit.sdk.starlette``) only translate
HTTP to ``bearer_token`` / ``verify`` / ``authorize`` and errors back to the answers of ``chit.answers``
(``bearer_token``, ``challenge`` and the SDK's errors are imported here for ``chit.sdk``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
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
from chit.errors import InvalidBearerRequestError as InvalidBearerRequestError
from chit.errors import InvalidTokenError
from chit.errors import MissingTokenError as MissingTokenError
from chit.policy.principals import Actor, DecisionSink, Principal, principal_from_claims
from chit.revocation.base import RevocationCheck
from chit.sdk.cache import DEFAULT_MAX_ENTRIES, VerifiedTokenCache
from chit.sdk.chits import KNOWN_ROOT_KEYS
from chit.sdk.decisions import DecisionLog
from chit.sdk.fetch import FETCH_TIMEOUT
from chit.sdk.jwks_client import (
    MAX_AGE_CAP,
    REFRESH_COOLDOWN,
    JwksClient,
    KeysUnavailableError,
    RootKeysClient,
    ServiceKeysClient,
)


class VerifierOptions(TypedDict, total=False):
    """``TokenVerifier``'s keyword options, for adapters that add their own."""

    algorithms: Collection[str]
    leeway: float
    max_token_size: int
    revocation: RevocationCheck | None
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


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience (this service's id).

    ``issuer`` is matched exactly against ``iss``; ``audience`` must be among ``aud``. ``leeway``
    (seconds) applies to ``exp``, ``nbf`` and ``iat``; tokens above ``max_token_size`` bytes are refused
    before any decoding. ``revocation`` is consulted with each token's ``jti`` and ``sid``, and with
    every revocation id of a chit; ``cache_size`` bounds the verified-token cache (0 turns it off).
    ``decisions`` is where ``require`` decisions go: a ``DecisionLog`` by default, any ``DecisionSink``, or
    False for none. ``chit_limits`` (``ChitLimits``; by default its own, with ``max_token_size``) bound the
    chits accepted.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        algorithms: Collection[str] = ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        max_token_size: int = MAX_TOKEN_SIZE,
        revocation: RevocationCheck | None = None,
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
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise TypeError("issuer must be a non-empty string")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.revocation = revocation
        self.clock = clock
        self.token_url = token_url or issuer.rstrip("/") + TOKEN_PATH
        self.decoder = AccessTokenDecoder(
            issuer=issuer, audience=audience, leeway=leeway, algorithms=algorithms, max_size=max_token_size
        )
        self.cache = VerifiedTokenCache(cache_size) if cache_size > 0 else None
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

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``InvalidTokenError`` (with its reason) for anything else.

        May raise ``KeysUnavailableError`` while no signing key was ever obtained from the issuer."""
        now = self.clock()
        cache = self.cache
        if cache is not None:
            principal = cache.get(token, now)
            if principal is not None:
                # also on cache hits: a withdrawn key must empty the cache
                (self.root_keys if principal.chit is not None else self.jwks).refresh_if_stale(now)
                self._check_revocation(principal, token)  # every revocation id of a chit, on every hit
                return principal
        if is_chit(token):
            return await self._verify_chit(token, now)
        jwks = self.jwks
        jwks.refresh_if_stale(now)
        try:
            try:
                claims = self.decoder.decode(token, jwks.find, now)
            except UnknownKeyError as exc:
                if not await jwks.refresh_for_unknown_kid(exc.kid):
                    raise
                claims = self.decoder.decode(token, jwks.find, self.clock())
            principal = principal_from_claims(claims, on_decision=self.decisions, token=token)
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
            on_decision=self.decisions,
            token=token,
            chit=ChitRequest(chit, self.chits, self.clock),
            through=through,
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
        revocation = self.revocation
        if revocation is None:
            return
        if principal.chit is not None:
            # a chit is revoked with any block: revoking one revokes every chit attenuated from it
            revoked = any(revocation.is_revoked(block_id, None) for block_id in principal.chit.revocation_ids)
        else:
            revoked = revocation.is_revoked(principal.token_id, principal.session_id)
        if revoked:
            if self.cache is not None:
                self.cache.discard(token)
            if isinstance(self.decisions, DecisionLog):
                self.decisions.rejected("token has been revoked", principal)
            raise InvalidTokenError("token has been revoked")

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
        the principal for the route body to decide with (``Principal.for_request``)."""
        return principal.for_request(permissions, method=method, path=path)

    async def aclose(self) -> None:
        """Stop a background key fetch; the verifier stays usable (a later call fetches again)."""
        await self.jwks.aclose()
        await self.root_keys.aclose()
        await self.service_keys.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
