"""The auth server's state, independent of any web framework: storage, keys, settings and clock.

Endpoints and the CLI both act through an ``AuthServer``; everything they change goes to the
database or the key files, so a CLI command takes effect on a running server at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chit.core import biscuit
from chit.core.claims import AccessTokenClaims
from chit.core.ids import unique_id
from chit.core.jwt import AccessTokenDecoder, VerificationKey, encode_access_token, verification_key
from chit.core.token_cache import VerifiedTokenCache
from chit.errors import InvalidTokenError
from chit.policy.permissions import Permission, audience
from chit.policy.principals import actors_from_claim
from chit.server.audit import AuditLog
from chit.server.config import Settings
from chit.server.feed import FeedHub
from chit.server.revocations import Revocations
from chit.storage.engine import create_database_engine
from chit.storage.keyfiles import KeyStore, LoadedKeys
from chit.storage.records import API_KEY_PREFIX, DELEGATION_PREFIX, Client, User
from chit.storage.sql.store import Store

CHIT_ID_LENGTH = 64  # a chit's id in the audit log (token_id holds 64): the start of its revocation id


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    """A JWT access token or a chit. A chit's ``claims`` are what its authority block states, its ``jti``
    the first 64 hex characters of the authority block's revocation id (a chit carries no jti)."""

    token: str
    claims: AccessTokenClaims
    revocation_ids: tuple[str, ...] = ()  # a chit's, one per block, the authority block's first

    @property
    def expires_in(self) -> int:
        return self.claims.exp - self.claims.iat

    @property
    def is_chit(self) -> bool:
        return bool(self.revocation_ids)


@dataclass(frozen=True, slots=True)
class ActiveChit:
    """A chit of this server that is active: what its authority block states, and the same as access
    token claims (its ``iat`` is not in the chit: ``exp`` less the access token lifetime, never later than
    it was minted; its ``jti`` the start of the authority block's revocation id, as ``mint_chit`` says)."""

    authority: biscuit.ChitAuthority
    claims: AccessTokenClaims


class AuthServer:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store = Store(create_database_engine(settings.database_url))
        self.audit = AuditLog(self.store, clock)
        self.revocations = Revocations(self)  # the only code that revokes anything
        self.feed = FeedHub(
            self.store,
            self.now,
            issuer=settings.issuer,
            redis_url=settings.redis_url,
            poll_ms=settings.feed_poll_ms,
            heartbeat=settings.feed_heartbeat,
        )
        self.keystore = KeyStore(settings.data_dir, timedelta(seconds=settings.key_retention))
        self._keys: LoadedKeys | None = None
        self._keys_stamp: tuple[int, int] | None = None
        self._keys_lock = threading.Lock()
        self._verification_keys: dict[str, VerificationKey] = {}  # kid -> parsed once
        self._decoder = AccessTokenDecoder(issuer=settings.issuer, audience=None, leeway=0)
        # claims of own access tokens presented back (subject and actor tokens, introspection), with their kid
        self._verified: VerifiedTokenCache[tuple[AccessTokenClaims, str]] = VerifiedTokenCache()

    def now(self) -> int:
        return int(self.clock())

    def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def keys(self, *, reload: bool = False) -> LoadedKeys:
        """The current key set, re-read when the key set file changed, or with ``reload`` (this process
        rotated them). The file is looked at on every call, one ``stat``: once ``chit keys rotate
        --revoke-old`` returns, no process signs with a key it retired, nor accepts what that key signed."""
        stamp = self.keystore.stamp()
        keys = self._keys
        if keys is not None and not reload and stamp == self._keys_stamp:
            return keys
        with self._keys_lock:
            if self._keys is None or reload or stamp != self._keys_stamp:
                self._keys = self.keystore.load()
                self._keys_stamp = stamp  # read before the load: a change meanwhile is loaded again
            return self._keys

    def issue_access_token(
        self,
        *,
        subject: str,
        client: Client,
        permissions: Iterable[Permission],
        session_id: str | None = None,
        act: Mapping[str, Any] | None = None,
        aud: Sequence[str] | None = None,
        not_after: int | None = None,
    ) -> IssuedAccessToken:
        """``session_id`` names what the token descends from, so that revoking it revokes the token:
        a refresh-token family (``rtf_…``), an API key (``key_…``) or a deferred delegation (``dlg_…``);
        it travels as ``sid``. A delegated token carries ``act``, may be addressed to fewer services
        than its permissions name (``aud``), and never outlives what it came from (``not_after``)."""
        claims = self._claims(subject, client, permissions, session_id, act, aud, not_after)
        key = self.keys().ring.signing_key(self.now_datetime())
        return IssuedAccessToken(encode_access_token(claims, key), claims)

    def mint_chit(
        self,
        *,
        subject: str,
        client: Client,
        permissions: Iterable[Permission],
        session_id: str | None = None,
        act: Mapping[str, Any] | None = None,
        not_after: int | None = None,
    ) -> IssuedAccessToken:
        """A chit stating what ``issue_access_token`` would sign, minted by the newest root key: the
        permissions as rights (none with a ``*`` segment), ``act`` as the actor facts, ``session_id`` as its
        ``session`` fact, the same expiry. A chit names no audience: the grant narrows its rights. Revoking
        its session, API key or deferred delegation revokes it as it does the JWTs of the same origin."""
        concrete = [p for p in permissions if biscuit.is_concrete(str(p))]
        claims = self._claims(subject, client, concrete, session_id, act, None, not_after)
        root = self.keys().minting_root_key
        minted = biscuit.mint(
            root.private_key,
            root.id,
            issuer=claims.iss,
            subject=claims.sub,
            client_id=claims.client_id,
            permissions=claims.scope,
            actors=[(actor.subject, actor.client_id or "") for actor in actors_from_claim(act)],
            expires_at=claims.exp,
            session_id=claims.sid,
        )
        claims = dataclasses.replace(claims, jti=minted.revocation_id[:CHIT_ID_LENGTH])
        return IssuedAccessToken(minted.token, claims, minted.revocation_ids)

    def _claims(
        self,
        subject: str,
        client: Client,
        permissions: Iterable[Permission],
        session_id: str | None,
        act: Mapping[str, Any] | None,
        aud: Sequence[str] | None,
        not_after: int | None,
    ) -> AccessTokenClaims:
        perms = sorted(set(permissions))
        now = self.now()
        exp = now + self.settings.access_token_ttl
        return AccessTokenClaims(
            iss=self.settings.issuer,
            sub=subject,
            aud=tuple(aud) if aud else tuple(audience(perms)),
            exp=exp if not_after is None else min(exp, not_after),
            iat=now,
            jti=unique_id(),
            client_id=client.client_id,
            scope=tuple(str(p) for p in perms),
            act=act,
            sid=session_id,
        )

    def _verification_key(self, kid: str) -> VerificationKey | None:
        key = self.keys().ring.find(kid, self.now_datetime())
        if key is None:
            return None
        cached = self._verification_keys.get(kid)
        if cached is None:
            cached = self._verification_keys[kid] = verification_key(kid, key.alg, key.public_key)
        return cached

    def decode_own_access_token(
        self, token: str, *, verify_exp: bool = True, issuer: str | None = None
    ) -> AccessTokenClaims:
        """Verify an access token this server issued (signature, issuer, type, times), for any audience."""
        now = self.clock()
        if issuer is not None and issuer != self.settings.issuer:
            decoder = AccessTokenDecoder(issuer=issuer, audience=None, leeway=0)
            return decoder.decode(token, self._verification_key, now, check_times=verify_exp)
        if not verify_exp:
            return self._decoder.decode(token, self._verification_key, now, check_times=False)
        # A token that verified once is not verified again while it lives (a service exchanges the same
        # user token for each of its calls); its key is still looked up, so a retired or revoked key ends it.
        cached = self._verified.get(token, now)
        if cached is not None and self._verification_key(cached[1]) is not None:
            return cached[0]
        kids: list[str] = []

        def key(kid: str) -> VerificationKey | None:
            kids.append(kid)
            return self._verification_key(kid)

        claims = self._decoder.decode(token, key, now)
        self._verified.put(token, (claims, kids[0]), claims.exp)  # the decoder's leeway is 0
        return claims

    def access_token_is_active(self, claims: AccessTokenClaims) -> bool:
        """Not revoked, nor what it descends from (its session, API key or deferred delegation); its
        subject, its client and every actor of its chain still enabled, the subject not disabled since."""
        return self.active_subject(claims) is not None

    def active_subject(self, claims: AccessTokenClaims) -> User | Client | None:
        """The subject of an active access token (a user, or a service account), else None."""
        store = self.store
        if store.is_access_token_revoked(claims.jti):
            return None
        if claims.sid is not None and not self.session_is_active(claims.sid):
            return None
        client = store.client_by_client_id(claims.client_id)
        if client is None or client.disabled:
            return None
        if claims.act is not None and not self.actors_enabled(claims.act):
            return None
        if claims.sub == client.id:
            return client
        user = store.user_by_id(claims.sub)
        if user is None:  # a service account's API key, exchanged by another client (the edge)
            account = store.client_by_pk(claims.sub)
            return account if account is not None and not account.disabled else None
        if user.disabled or claims.iat < user.revoked_before:
            return None
        return user

    def actors_enabled(self, act: Mapping[str, Any]) -> bool:
        """Every service in a delegation chain still exists and is enabled: disabling one ends its chains."""
        try:
            chain = actors_from_claim(act)
        except InvalidTokenError:
            return False
        for actor in chain:
            client = self.store.client_by_client_id(actor.client_id) if actor.client_id else None
            if client is None or client.disabled:
                return False
        return True

    def session_is_active(self, session_id: str) -> bool:
        """Whether a token's ``sid`` (a refresh-token family, an API key or a deferred delegation) still stands."""
        if session_id.startswith(DELEGATION_PREFIX):
            delegation = self.store.delegation(session_id)
            return delegation is not None and delegation.revoked_at is None and delegation.expires_at > self.now()
        if session_id.startswith(API_KEY_PREFIX):
            key = self.store.api_key(session_id)
            if key is None or key.revoked_at is not None:
                return False
            return key.expires_at is None or key.expires_at > self.now()
        return not self.store.revoked_families([session_id])

    def read_own_chit(self, token: str) -> biscuit.ChitAuthority:
        """A chit this server minted, verified with the root key its root key id names (expired or not);
        anything else is ``InvalidTokenError``."""
        authority = biscuit.read_chit(token, self.keys().biscuit_public_keys_by_id)
        if authority.issuer != self.settings.issuer:
            raise InvalidTokenError("the chit was minted for another issuer")
        return authority

    def active_chit(self, token: str) -> ActiveChit | None:
        """A chit of this server that is not expired (by any block's expiry: an attenuated ``ttl`` ends it too),
        none of whose blocks' revocation ids is revoked (so revoking a chit revokes every chit attenuated from
        it), and whose session, subject, client and actors are active by the rules of ``active_subject``; else
        None. Its claims' ``exp`` is that earliest expiry."""
        try:
            authority = self.read_own_chit(token)
        except InvalidTokenError:
            return None
        if authority.valid_until <= self.now() or self.store.revoked_chit_ids(authority.revocation_ids):
            return None
        act: dict[str, Any] | None = None
        for actor_subject, actor_client in reversed(authority.actors):  # the innermost act is the first actor
            actor: dict[str, Any] = {"sub": actor_subject}
            if actor_client:
                actor["client_id"] = actor_client
            if act is not None:
                actor["act"] = act
            act = actor
        claims = AccessTokenClaims(
            iss=authority.issuer,
            sub=authority.subject,
            aud=tuple(sorted({right.split(":", 1)[0] for right in authority.rights})) or ("chit",),
            exp=authority.valid_until,
            iat=max(0, authority.expires_at - self.settings.access_token_ttl),
            jti=authority.revocation_ids[0][:CHIT_ID_LENGTH],
            client_id=authority.client_id,
            scope=authority.rights,
            act=act,
            sid=authority.session_id,
        )
        return ActiveChit(authority, claims) if self.access_token_is_active(claims) else None

    def verify_active_access_token(self, token: str) -> AccessTokenClaims | None:
        try:
            claims = self.decode_own_access_token(token)
        except InvalidTokenError:
            return None
        return claims if self.access_token_is_active(claims) else None
