"""A test kit for services that use chit: an in-process issuer, token factories and a movable clock.

    from chit.testing import Clock, TestIssuer

    clock = Clock()
    issuer = TestIssuer(clock=clock)
    verifier = issuer.verifier(audience="image-store")       # talks to the issuer in-process
    token = issuer.token("usr_alice", ["image-store:images:read"])
    principal = await verifier.verify(token)
    chit = issuer.chit("usr_alice", ["image-store:images:read"])  # the same, as a chit
    clock.advance(3600)                                       # ... and now both have expired

``TestIssuer`` serves discovery (with its chit root keys: ``biscuit_root_keys``, ``biscuit_public_keys``),
the JWKS and a token endpoint (``client_credentials``, and token exchange for the clients added with
``on_behalf``/``deferred``) through an httpx transport (no socket, no thread), signs with keys it can
rotate, and can play an outage (``down``) or an auth server answering garbage (``garbage``). Nothing
here imports pytest.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Unpack
from urllib.parse import parse_qsl, unquote_plus

import httpx

from chit.core import chit_authorizer
from chit.core.jwt import AccessTokenDecoder, VerificationKey, sign_claims, verification_key
from chit.core.keys import Algorithm, SigningKey, new_signing_key
from chit.core.paths import DISCOVERY_PATHS, JWKS_PATH, TOKEN_PATH
from chit.errors import InvalidTokenError
from chit.policy.permissions import audience
from chit.policy.principals import Actor, Principal
from chit.policy.scopes import parse_permissions
from chit.sdk.delegation import ACCESS_TOKEN_TYPE, DEFERRED_DELEGATION_TYPE, TOKEN_EXCHANGE_GRANT
from chit.sdk.identity import ServiceIdentity
from chit.sdk.verifier import VerifierOptions

if TYPE_CHECKING:
    from chit.sdk.fastapi import Verifier

__all__ = ["Clock", "RootKey", "TestIssuer", "make_principal"]

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DEFERRED_TTL = 86_400
MAX_DEFERRED_TTL = 7 * 86_400


class Clock:
    """A clock tests move by hand; pass it as ``clock=`` to a verifier, an identity or an issuer."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        return self._now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, timestamp: float) -> None:
        self._now = float(timestamp)


def _act_claim(actors: Sequence[Actor | str]) -> dict[str, Any] | None:
    """Nested ``act`` claims, current actor (first) outermost."""
    act: dict[str, Any] | None = None
    for actor in reversed(actors):
        entry = Actor(actor, actor) if isinstance(actor, str) else actor
        claim: dict[str, Any] = {"sub": entry.subject}
        if entry.client_id is not None:
            claim["client_id"] = entry.client_id
        if act is not None:
            claim["act"] = act
        act = claim
    return act


@dataclass(frozen=True, slots=True)
class RootKey:
    """A chit root key: its id (what a chit's root key id names), its private and public halves."""

    id: int
    private_key: str = field(repr=False)
    public_key: str

    @classmethod
    def generate(cls, key_id: int) -> RootKey:
        private, public = chit_authorizer.new_root_key()
        return cls(key_id, private, public)


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A deferred delegation the issuer handed out: whose, for which service, what, until when."""

    client_id: str
    subject: str
    act: dict[str, Any] | None
    scope: tuple[str, ...]
    expires_at: int
    job_id: str | None


class _Refused(Exception):
    """A token request refused with an RFC 6749 §5.2 error."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


class TestIssuer:
    """An in-process auth server for tests: keys, tokens, discovery, JWKS, client credentials and
    token exchange (RFC 8693, with deferred delegation)."""

    __test__ = False  # a helper, not a test class

    def __init__(
        self,
        issuer: str = "https://issuer.chit.test",
        *,
        alg: Algorithm = "EdDSA",
        clock: Clock | None = None,
        access_token_ttl: int = 600,
        jwks_max_age: int = 300,
        latency: float = 0.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.alg: Algorithm = alg
        self.clock = clock or Clock()
        self.access_token_ttl = access_token_ttl
        self.jwks_max_age = jwks_max_age
        self.latency = latency
        self.down = False  # every request fails to connect, as when the auth server is stopped
        self.garbage = False  # every request answers 200 with a body that is not JSON
        self.requests: list[str] = []  # paths requested, in order
        self.token_forms: list[dict[str, str]] = []  # the form of each token request, in order
        self.clients: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.on_behalf: dict[str, tuple[str, ...]] = {}  # what each client may exercise for a user
        self.deferrable: dict[str, tuple[str, ...]] = {}  # ... and delegate for later
        self.delegations: dict[str, _Deferred] = {}  # deferred-delegation handles handed out
        first = new_signing_key(alg, self.clock.datetime())
        self.published: list[SigningKey] = [first]
        self.signing_key = first
        self.root_key = RootKey.generate(1)  # signs chits
        self.root_keys: list[RootKey] = [self.root_key]  # published, newest first
        self.transport = _IssuerTransport(self)

    # --- keys -----------------------------------------------------------------------------------------

    def rotate(self, *, sign_now: bool = True, alg: Algorithm | None = None) -> SigningKey:
        """Publish a new key; it signs at once with ``sign_now`` (as ``chit keys rotate --now``),
        else only once ``start_signing`` is called. Old keys stay published until ``retire``."""
        key = new_signing_key(alg or self.alg, self.clock.datetime())
        self.published.insert(0, key)
        if sign_now:
            self.signing_key = key
        return key

    def start_signing(self, key: SigningKey) -> None:
        self.signing_key = key

    def retire(self, key: SigningKey | str) -> None:
        kid = key if isinstance(key, str) else key.kid
        self.published = [k for k in self.published if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.published]}

    def rotate_root_key(self, *, sign_now: bool = True) -> RootKey:
        """Publish a new chit root key (the next id); it signs chits at once with ``sign_now``."""
        key = RootKey.generate(max(k.id for k in self.root_keys) + 1 if self.root_keys else 1)
        self.root_keys.insert(0, key)
        if sign_now:
            self.root_key = key
        return key

    def retire_root_key(self, key: RootKey) -> None:
        self.root_keys = [k for k in self.root_keys if k.id != key.id]

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "token_endpoint": self.issuer + TOKEN_PATH,
            "jwks_uri": self.issuer + JWKS_PATH,
            "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "biscuit_public_keys": [key.public_key for key in self.root_keys],
            "biscuit_root_keys": [{"id": key.id, "public_key": key.public_key} for key in self.root_keys],
        }

    # --- tokens ---------------------------------------------------------------------------------------

    def claims(
        self,
        subject: str = "usr_test",
        scope: Iterable[str] = (),
        *,
        client_id: str = "test-client",
        ttl: int | None = None,
        actors: Sequence[Actor | str] = (),
        jti: str | None = None,
        session_id: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """The claims a chit access token would carry (``aud``: the services ``scope`` names);
        ``overrides`` replace or add any claim, and an override of ``None`` removes it (``exp=None``
        makes a token without ``exp``)."""
        scope = tuple(scope)
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": _audience(scope),
            "exp": now + (self.access_token_ttl if ttl is None else ttl),
            "iat": now,
            "jti": jti or uuid.uuid4().hex,
            "client_id": client_id,
            "scope": " ".join(scope),
        }
        act = _act_claim(actors)
        if act is not None:
            claims["act"] = act
        if session_id is not None:
            claims["sid"] = session_id
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def sign(
        self, claims: Mapping[str, Any], *, key: SigningKey | None = None, headers: Mapping[str, Any] | None = None
    ) -> str:
        """A token over exactly ``claims``, signed by ``key`` (default: the current signing key)."""
        return sign_claims(claims, key or self.signing_key, headers=headers)

    def token(
        self,
        subject: str = "usr_test",
        scope: Iterable[str] = (),
        *,
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """A signed access token for ``subject`` carrying ``scope``; options as for ``claims``."""
        return self.sign(self.claims(subject, scope, **options), key=key, headers=headers)

    def chit(
        self,
        subject: str = "usr_test",
        scope: Iterable[str] = (),
        *,
        client_id: str = "test-client",
        actors: Sequence[Actor | str] = (),
        ttl: int | None = None,
        issuer: str | None = None,
        key: RootKey | None = None,
        root_key_id: int | Literal["key"] | None = "key",
        datalog: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """A chit for ``subject`` carrying ``scope`` (concrete permissions), as the auth server mints one
        (DESIGN §4, "Chits on the wire"): ``actors`` current first, expiring after ``ttl`` (default: the
        access-token lifetime), signed by ``key`` (default: the current root key) under ``root_key_id``
        (default: the key's id; None names none), from the session ``session_id`` if given. ``datalog``
        adds to the authority block."""
        signer = key or self.root_key
        chain = [Actor(a, a) if isinstance(a, str) else a for a in actors]
        return chit_authorizer.mint(
            signer.private_key,
            signer.id if root_key_id == "key" else root_key_id,
            issuer=self.issuer if issuer is None else issuer,
            subject=subject,
            client_id=client_id,
            permissions=tuple(scope),
            actors=[(a.subject, a.client_id or "") for a in chain],
            expires_at=int(self.clock()) + (self.access_token_ttl if ttl is None else ttl),
            datalog=datalog,
            session_id=session_id,
        )

    def service_token(self, client_id: str, scope: Iterable[str] = (), **options: Any) -> str:
        """A client-credentials token: the service acting as itself."""
        return self.token(client_id, scope, client_id=client_id, **options)

    def delegated_token(self, subject: str, scope: Iterable[str], actors: Sequence[Actor | str], **options: Any) -> str:
        """A token of ``subject`` used by ``actors`` (current actor first), as token exchange issues."""
        client_id = options.pop("client_id", None)
        first = actors[0]
        if client_id is None:
            client_id = first if isinstance(first, str) else first.client_id or first.subject
        return self.token(subject, scope, actors=actors, client_id=client_id, **options)

    # --- service accounts -----------------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        scope: Iterable[str] = (),
        *,
        on_behalf: Iterable[str] = (),
        deferred: Iterable[str] = (),
    ) -> None:
        """Register a client: its own permissions (``scope``) and, as a service's ``[on_behalf]``, what
        it may exercise for a user by token exchange (``on_behalf``) and delegate for later (``deferred``)."""
        self.clients[client_id] = (client_secret, tuple(scope))
        self.on_behalf[client_id] = tuple(on_behalf)
        self.deferrable[client_id] = tuple(deferred)

    def revoke_delegation(self, handle: str) -> None:
        """End a deferred delegation: its handle is refused from now on."""
        self.delegations.pop(handle, None)

    # --- wiring ---------------------------------------------------------------------------------------

    def http_client(self) -> httpx.AsyncClient:
        """An httpx client whose requests this issuer answers in-process."""
        return httpx.AsyncClient(transport=self.transport)

    def sync_http_client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport)

    def verifier(self, audience: str, **options: Unpack[VerifierOptions]) -> Verifier:
        """A ``Verifier`` for this issuer, on its transport and clock (needs ``chit[fastapi]``)."""
        from chit.sdk.fastapi import Verifier  # here, so that the rest of the kit works without FastAPI

        options.setdefault("http_client", self.http_client())
        options.setdefault("clock", self.clock)
        return Verifier(self.issuer, audience, **options)

    def identity(self, client_id: str, client_secret: str, **options: Any) -> ServiceIdentity:
        """A ``ServiceIdentity`` that gets its tokens from this issuer."""
        options.setdefault("http_client", self.http_client())
        options.setdefault("sync_http_client", self.sync_http_client())
        options.setdefault("clock", self.clock)
        return ServiceIdentity(client_id, client_secret, issuer=self.issuer, **options)

    # --- the HTTP side --------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if self.down:
            raise httpx.ConnectError("connection refused (TestIssuer is down)", request=request)
        if self.garbage:
            return httpx.Response(200, content=b"<html>maintenance</html>", headers={"Content-Type": "text/html"})
        if request.method == "GET" and path in DISCOVERY_PATHS:
            return httpx.Response(200, json=self.discovery(), headers={"Cache-Control": "max-age=300"})
        if request.method == "GET" and path == JWKS_PATH:
            return httpx.Response(
                200, json=self.jwks(), headers={"Cache-Control": f"public, max-age={self.jwks_max_age}"}
            )
        if request.method == "POST" and path == TOKEN_PATH:
            return self._token_endpoint(request)
        return httpx.Response(404, json={"detail": "not found"})

    def _token_endpoint(self, request: httpx.Request) -> httpx.Response:
        no_store = {"Cache-Control": "no-store"}
        form = dict(parse_qsl(request.content.decode()))
        self.token_forms.append(form)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            raw_id, _, raw_secret = decoded.partition(":")
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        registered = self.clients.get(client_id or "")
        if registered is None or registered[0] != secret:
            return httpx.Response(401, json={"error": "invalid_client"}, headers=no_store)
        assert client_id is not None
        if form.get("grant_type") == TOKEN_EXCHANGE_GRANT:
            try:
                body = self._exchange(client_id, form)
            except _Refused as refused:
                error = {"error": refused.error, "error_description": refused.description}
                return httpx.Response(refused.status, json=error, headers=no_store)
            return httpx.Response(200, json=body, headers=no_store)
        if form.get("grant_type") != "client_credentials":
            return httpx.Response(400, json={"error": "unsupported_grant_type"}, headers=no_store)
        held = registered[1]
        wanted = tuple(form["scope"].split()) if "scope" in form else held
        if not set(wanted) <= set(held):
            return httpx.Response(400, json={"error": "invalid_scope"}, headers=no_store)
        token = self.service_token(client_id, wanted)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": " ".join(wanted),
        }
        return httpx.Response(200, json=body, headers=no_store)

    # --- token exchange (RFC 8693) --------------------------------------------------------------------

    def _exchange(self, client_id: str, form: Mapping[str, str]) -> dict[str, Any]:
        """The answer to a token exchange by ``client_id``, or ``_Refused``."""
        if not self.on_behalf.get(client_id):
            raise _Refused("unauthorized_client", f"{client_id} may not exchange tokens")
        subject_token = form.get("subject_token")
        if not subject_token:
            raise _Refused("invalid_request", "subject_token is missing")
        requested = tuple(form["scope"].split()) if "scope" in form else None
        subject_type = form.get("subject_token_type")
        if subject_type == DEFERRED_DELEGATION_TYPE:
            return self._redeem(client_id, subject_token, requested, form.get("audience"))
        if subject_type not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise _Refused("invalid_request", "unsupported subject_token_type")
        subject = self._subject_claims(subject_token, client_id)
        act = subject.get("act")
        if client_id in _chain(act):
            raise _Refused("invalid_request", f"{client_id} already acts in this token")
        held = tuple(subject["scope"].split())
        wanted_type = form.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if wanted_type == DEFERRED_DELEGATION_TYPE:
            scope = _narrowed(held, self.deferrable.get(client_id, ()), requested)
            return self._defer(client_id, subject, scope, form)
        if wanted_type != ACCESS_TOKEN_TYPE:
            raise _Refused("invalid_request", "unsupported requested_token_type")
        scope = _narrowed(held, self.on_behalf[client_id], requested)
        return self._delegated(client_id, subject["sub"], act, scope, form.get("audience"), int(subject["exp"]))

    def _subject_claims(self, token: str, client_id: str) -> dict[str, Any]:
        """The claims of an access token this issuer signed for ``client_id`` that has not expired."""
        decoder = AccessTokenDecoder(issuer=self.issuer, audience=client_id, leeway=0)
        try:
            claims = decoder.decode(token, self._published_key, self.clock())
        except InvalidTokenError as exc:
            raise _Refused("invalid_request", f"subject_token: {exc.reason}") from exc
        return claims.to_dict()

    def _published_key(self, kid: str) -> VerificationKey | None:
        key = next((key for key in self.published if key.kid == kid), None)
        return None if key is None else verification_key(key.kid, key.alg, key.public_key)

    def _delegated(
        self,
        client_id: str,
        subject: str,
        act: Mapping[str, Any] | None,
        scope: tuple[str, ...],
        audience: str | None,
        not_after: int,
    ) -> dict[str, Any]:
        """An access token of ``subject`` with ``client_id`` as its current actor, ``act`` nested inside."""
        aud = _audience(scope)
        if audience is not None:
            if audience not in aud:
                raise _Refused("invalid_target", f"the granted scope does not reach {audience}")
            aud = [audience]
        now = int(self.clock())
        exp = min(now + self.access_token_ttl, not_after)
        actor: dict[str, Any] = {"sub": client_id, "client_id": client_id}
        if act is not None:
            actor["act"] = dict(act)
        claims = self.claims(subject, scope, client_id=client_id, aud=aud, exp=exp, act=actor)
        return {
            "access_token": self.sign(claims),
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": exp - now,
            "scope": " ".join(scope),
        }

    def _defer(
        self, client_id: str, subject: Mapping[str, Any], scope: tuple[str, ...], form: Mapping[str, str]
    ) -> dict[str, Any]:
        try:
            ttl = int(form.get("expires_in", DEFERRED_TTL))
        except ValueError:
            raise _Refused("invalid_request", "expires_in is not a number of seconds") from None
        if not 0 < ttl <= MAX_DEFERRED_TTL:
            raise _Refused("invalid_request", f"expires_in must be between 1 and {MAX_DEFERRED_TTL}")
        handle = f"chit_dd_{uuid.uuid4().hex[:16]}.{secrets.token_urlsafe(24)}"
        act = subject.get("act")
        self.delegations[handle] = _Deferred(
            client_id=client_id,
            subject=subject["sub"],
            act=None if act is None else dict(act),
            scope=scope,
            expires_at=int(self.clock()) + ttl,
            job_id=form.get("job_id"),
        )
        return {
            "access_token": handle,
            "issued_token_type": DEFERRED_DELEGATION_TYPE,
            "token_type": "N_A",
            "expires_in": ttl,
            "scope": " ".join(scope),
        }

    def _redeem(
        self, client_id: str, handle: str, requested: tuple[str, ...] | None, audience: str | None
    ) -> dict[str, Any]:
        deferred = self.delegations.get(handle)
        if deferred is None or deferred.client_id != client_id or deferred.expires_at <= self.clock():
            raise _Refused("invalid_request", "the deferred delegation is unknown, expired or another client's")
        scope = _narrowed(deferred.scope, deferred.scope, requested)
        return self._delegated(client_id, deferred.subject, deferred.act, scope, audience, deferred.expires_at)


def _narrowed(held: Sequence[str], allowed: Sequence[str], requested: Sequence[str] | None) -> tuple[str, ...]:
    """What an exchanged token carries: held ∩ allowed ∩ requested; asking for more is ``invalid_scope``."""
    scope = tuple(permission for permission in held if permission in allowed)
    if requested is not None:
        if not set(requested) <= set(scope):
            raise _Refused("invalid_scope", "a requested permission cannot be delegated")
        scope = tuple(permission for permission in scope if permission in requested)
    if not scope:
        raise _Refused("invalid_scope", "nothing to delegate")
    return scope


def _chain(act: object) -> list[str]:
    """The client ids of a nested ``act`` claim, current actor first."""
    names: list[str] = []
    while isinstance(act, Mapping):
        names.append(str(act.get("client_id") or act.get("sub")))
        act = act.get("act")
    return names


def _audience(scope: Sequence[str]) -> list[str]:
    return audience(parse_permissions(scope))


class _IssuerTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        if self.issuer.latency:
            time.sleep(self.issuer.latency)
        return self.issuer.handle(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if self.issuer.latency:
            await asyncio.sleep(self.issuer.latency)
        return self.issuer.handle(request)


def make_principal(
    subject: str = "usr_test",
    permissions: Iterable[str] = (),
    *,
    client_id: str = "test-client",
    actors: Sequence[Actor | str] = (),
    token_id: str | None = None,
    expires_at: datetime | None = None,
    clock: Clock | None = None,
) -> Principal:
    """A principal without a token, for unit tests of route logic."""
    now = clock.datetime() if clock is not None else datetime.now(UTC)
    return Principal(
        subject=subject,
        client_id=client_id,
        permissions=frozenset(permissions),
        expires_at=expires_at or datetime.fromtimestamp(now.timestamp() + 600, UTC),
        actors=tuple(Actor(a, a) if isinstance(a, str) else a for a in actors),
        token_id=token_id or uuid.uuid4().hex,
    )
