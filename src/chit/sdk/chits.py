"""Narrowing a chit before handing it on, offline: ``attenuate`` in one call, ``ChitForwarder`` per request.

    # cart: what it calls may only charge and send the receipt
    payment = httpx.AsyncClient(base_url=PAYMENT_URL, auth=ChitForwarder(
        operations=["payment:charges:create", "email:messages:send"]))
    # payment: what it calls may only send email
    email = httpx.AsyncClient(base_url=EMAIL_URL, auth=ChitForwarder(operations=["email:messages:send"]))
    # email: nothing to hand on; its routes require email:messages:send as usual

Proof of the path: with ``service_key=ServiceKey.from_env("cart")`` (``sign_as=`` for ``attenuate``) the service
also appends a third-party block ``through("<its id>")`` signed with its own service key (the private half
``chit service key SERVICE_ID`` hands over). Downstream, ``principal.require_path("cart", "payment")``
holds only for blocks signed by the keys the auth server publishes for those services.

Every argument only adds checks to a new block (``chit.core.chit_authorizer.restriction``): the chit can
do less, never more, and nobody downstream can remove the block. No call to the auth server is made.
biscuit-python re-serializes only a chit it has verified, so attenuating needs the issuer's root public
key: the keys this process's verifiers hold (``KNOWN_ROOT_KEYS``, filled as they fetch them), or
``public_keys=``. The chit of the request being handled is already verified: attenuating it costs one
appended block, no signature check.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from chit.core.chit_authorizer import (
    ChitRequest,
    RootKeys,
    append,
    is_chit,
    parse_for_attenuation,
    parse_root_keys,
    restriction,
    service_public_key,
)
from chit.sdk import context
from chit.sdk.identity import BearerOrFallback
from chit.sdk.settings import (
    SERVICE_ID_VARIABLE,
    SERVICE_KEY_VARIABLE,
    invalid_service_key,
    missing_service_key,
    other_service_id,
    stop,
)


class RootKeyRegistry:
    """The chit root keys this process's verifiers hold, per issuer: what ``attenuate`` verifies with."""

    def __init__(self) -> None:
        self._keys: dict[str, RootKeys] = {}
        self._lock = threading.Lock()

    def remember(self, issuer: str, keys: RootKeys) -> None:
        with self._lock:
            self._keys = {**self._keys, issuer: keys}

    def forget(self) -> None:
        with self._lock:
            self._keys = {}

    def candidates(self, key_id: int | None) -> tuple[Any, ...]:
        return tuple(key for keys in self._keys.values() for key in keys.candidates(key_id))


KNOWN_ROOT_KEYS = RootKeyRegistry()


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """A service's own key: its id and the private half (``ed25519-private/<hex>``) of the key pair the auth
    server publishes for it. ``ValueError`` when the key is not one."""

    service_id: str
    private_key: str = field(repr=False)
    public_key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.service_id, str) or not self.service_id:
            raise ValueError("a service id is a non-empty string")
        object.__setattr__(self, "public_key", service_public_key(self.private_key))

    @classmethod
    def from_env(cls, service_id: str | None = None, *, environ: Mapping[str, str] | None = None) -> ServiceKey:
        """The key in ``CHIT_SERVICE_KEY`` (``environ``, by default the process's), of ``service_id``, else of
        the service ``CHIT_SERVICE_ID`` names (which, when set, must name ``service_id``).

        Meant for a service's startup: a key that is missing, is not one, or belongs to another service
        ends the process (``SystemExit``, status 1) with a message naming the variables and
        ``chit service key <id>``, which uvicorn prints without a traceback. Code that wants a
        ``ValueError`` instead builds ``ServiceKey(service_id, private_key)`` itself. Whether the auth server
        publishes this key for the service is checked by a verifier given it (``service_key=``) at startup."""
        if service_id is not None and not isinstance(service_id, str):
            raise TypeError("from_env takes the service id; the environment goes in environ=")
        source = os.environ if environ is None else environ
        named = source.get(SERVICE_ID_VARIABLE, "").strip()
        if service_id and named and named != service_id:
            stop(other_service_id(service_id, named))
        service_id = service_id or named
        private_key = source.get(SERVICE_KEY_VARIABLE, "").strip()
        if not service_id or not private_key:
            stop(missing_service_key(service_id))
        try:
            return cls(service_id, private_key)
        except ValueError:
            stop(invalid_service_key(service_id))


def attenuate(
    token: str,
    *,
    operations: Collection[str] | None = None,
    service: str | Collection[str] | None = None,
    resource: str | Collection[str] | None = None,
    method: str | None = None,
    path: str | None = None,
    ttl: float | None = None,
    datalog: str | None = None,
    public_keys: Iterable[str] | Mapping[int, str] | None = None,
    now: float | None = None,
    sign_as: ServiceKey | None = None,
) -> str:
    """``token`` narrowed to ``operations`` (permissions; also to the services they name), a ``service``, a
    ``resource``, one request (``method``, ``path``; a ``path`` ending in ``*`` is a prefix), ``ttl`` seconds
    from ``now`` (default: the current time), and ``datalog`` checks (bounded as any appended block).
    ``sign_as`` then appends a third-party block ``through("<service id>")`` signed with that service key
    (alone, it only signs).

    ``path`` is in the form of the ``path`` fact the receiving service states: percent-decoded, as its
    router matches it, without the query (``"/docs/a?b"`` for a request to ``/docs/a%3Fb``; httpx's
    ``URL.path``). A final ``*`` here always makes a prefix, so a path taken from input must not end in one;
    ``ChitForwarder(bind_request=True)`` binds a request's exact path, a final ``*`` included.

    ``public_keys`` (``ed25519/<hex>`` texts, or a mapping root key id -> text) replaces the keys this
    process's verifiers hold. ``ValueError`` for nothing to restrict, bad arguments, a chit no known key
    verifies, or a result a verifier would refuse (too large, too many blocks, datalog out of bounds).
    """
    return _attenuate(
        token,
        operations=operations,
        service=service,
        resource=resource,
        method=method,
        path=path,
        ttl=ttl,
        datalog=datalog,
        public_keys=public_keys,
        now=now,
        sign_as=sign_as,
    )


def _attenuate(
    token: str,
    *,
    operations: Collection[str] | None = None,
    service: str | Collection[str] | None = None,
    resource: str | Collection[str] | None = None,
    method: str | None = None,
    path: str | None = None,
    exact_path: str | None = None,
    ttl: float | None = None,
    datalog: str | None = None,
    public_keys: Iterable[str] | Mapping[int, str] | None = None,
    now: float | None = None,
    sign_as: ServiceKey | None = None,
) -> str:
    """``attenuate``, and ``exact_path``: one path taken as written, a final ``*`` included."""
    expires_at: int | None = None
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        expires_at = int((time.time() if now is None else now) + ttl)
    restrictions = (operations, service, resource, method, path, exact_path, expires_at, datalog)
    block: Any = None
    if sign_as is None or any(value is not None for value in restrictions):
        block = restriction(
            operations=operations,
            service=service,
            resource=resource,
            method=method,
            path=path,
            exact_path=exact_path,
            expires_at=expires_at,
            datalog=datalog,
        )
    if sign_as is not None and not isinstance(sign_as, ServiceKey):
        raise ValueError("sign_as must be a ServiceKey")
    through = None if sign_as is None else (sign_as.service_id, sign_as.private_key)
    return append(_biscuit(token, public_keys), block, checked=datalog is not None, through=through)


def _biscuit(token: str, public_keys: Iterable[str] | Mapping[int, str] | None) -> Any:
    if not isinstance(token, str) or not is_chit(token):
        raise ValueError("only a chit can be attenuated (this token is not one)")
    principal = context.current_principal()
    if public_keys is None and principal is not None and principal.token == token:
        checks = principal.chit
        if isinstance(checks, ChitRequest):
            return checks.biscuit  # verified when the request came in
    keys: Callable[[int | None], tuple[Any, ...]]
    if public_keys is None:
        keys = KNOWN_ROOT_KEYS.candidates
    elif isinstance(public_keys, Mapping):
        entries = [{"id": key_id, "public_key": text} for key_id, text in public_keys.items()]
        keys = parse_root_keys({"biscuit_root_keys": entries}).candidates
    else:
        keys = parse_root_keys({"biscuit_public_keys": list(public_keys)}).candidates
    return parse_for_attenuation(token, keys)


class ChitForwarder(BearerOrFallback):
    """Sends the chit of the request being handled (``chit.sdk.context``), attenuated for the call.

    The arguments are ``attenuate``'s; ``bind_request`` also restricts the chit to the outgoing request's
    method and exact path (``URL.path``, percent-decoded as the receiving router matches it; a final ``*`` is
    part of the path, never a prefix); ``service_key`` also signs ``through("<service id>")`` with it (proof
    of the path). Without a request chit (a JWT, or outside a request), ``fallback`` (e.g. the
    service's own ``ServiceIdentity``) authenticates the call, else ``RuntimeError``: a JWT is never
    forwarded unattenuated by this class (``ForwardedToken`` does that).
    """

    def __init__(
        self,
        *,
        operations: Collection[str] | None = None,
        service: str | Collection[str] | None = None,
        resource: str | Collection[str] | None = None,
        ttl: float | None = None,
        datalog: str | None = None,
        bind_request: bool = False,
        fallback: httpx.Auth | None = None,
        public_keys: Iterable[str] | Mapping[int, str] | None = None,
        clock: Callable[[], float] = time.time,
        service_key: ServiceKey | None = None,
    ) -> None:
        restrictions = (operations, service, resource, ttl, datalog, service_key)
        if all(value is None for value in restrictions) and not bind_request:
            raise ValueError("a ChitForwarder must restrict something (operations, service, ...) or sign (service_key)")
        if service_key is not None and not isinstance(service_key, ServiceKey):
            raise ValueError("service_key must be a ServiceKey")
        self.operations = None if operations is None else tuple(operations)
        self.service = service
        self.resource = resource
        self.ttl = ttl
        self.datalog = datalog
        self.bind_request = bind_request
        self.fallback = fallback
        self.public_keys = public_keys
        self.clock = clock
        self.service_key = service_key

    def bearer(self, request: httpx.Request) -> str | None:
        """The chit to send with ``request``, or None when the fallback authenticates it."""
        auth = context.current_auth()
        if auth is None or not is_chit(auth.token):
            if self.fallback is None:
                raise RuntimeError("no request chit to forward: call from inside a request authenticated by a chit")
            return None
        return _attenuate(
            auth.token,
            operations=self.operations,
            service=self.service,
            resource=self.resource,
            method=request.method if self.bind_request else None,
            # exact: a path may end in "*" (a literal one, or "%2A" decoded) and must not become a prefix
            exact_path=request.url.path if self.bind_request else None,
            ttl=self.ttl,
            datalog=self.datalog,
            public_keys=self.public_keys,
            now=self.clock(),
            sign_as=self.service_key,
        )
