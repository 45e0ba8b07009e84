"""Who is calling and what they may do: the ``Principal`` a service decides on, whatever the token kind.

A ``Principal`` is built from a verified token (``principal_from_claims`` for JWT access tokens, the
SDK's verifier from a chit's authority block) and answers decisions locally: ``can`` and ``require``
for a permission, ``owns`` and ``require_owner`` for ownership, ``require_actor`` for the service
acting for the subject (the rules and their reasons are ``chit.policy.decisions``). For a chit
(``kind == "chit"``), every decision also evaluates the chit's own checks (``ChitChecks``) with the facts
the decision states (the permission asked, ``resource=``, the owner): a chit attenuated to one resource,
one operation or one service refuses the others, with a reason naming the failed check. ``came_through``
and ``require_path`` ask which services provably handled the request (``through``, a chit's signed blocks). Every
``require*`` decision is handed to the principal's ``on_decision`` sink when it has one (decision
logging lives in the SDK, not here).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from chit.core.claims import AccessTokenClaims
from chit.errors import InsufficientScopeError, InvalidPermissionError, InvalidTokenError
from chit.policy import decisions
from chit.policy.decisions import Decision
from chit.policy.permissions import WILDCARD, Permission

TokenKind = Literal["jwt", "chit"]
MAX_DELEGATION_DEPTH = 8
MAX_BOUND_REQUESTS = 64  # routes remembered per principal by for_request

# Route code asks for the same few permissions on every request: parse each name once.
_parse = functools.lru_cache(maxsize=4096)(Permission.parse)


@dataclass(frozen=True, slots=True)
class Actor:
    """One party acting for the subject (RFC 8693 §4.1 ``act``)."""

    subject: str
    client_id: str | None = None

    @property
    def name(self) -> str:
        return self.client_id or self.subject


class ChitChecks(Protocol):
    """A chit's own checks and what the service knows of the request (``chit.core.chit_authorizer.ChitRequest``)."""

    @property
    def revocation_ids(self) -> tuple[str, ...]: ...

    @property
    def pending(self) -> tuple[str, ...]:
        """Checks the route's dependency left for the route body (they name what only the body states)."""
        ...

    def failure(
        self, operations: Sequence[str] = (), *, resource: str | None = None, owner: str | None = None
    ) -> str | None:
        """Why the chit refuses a decision stating these facts (every check evaluated), or None."""
        ...

    def at_request(
        self, operations: Sequence[str], method: str | None = None, path: str | None = None
    ) -> tuple[ChitChecks, str | None]:
        """These checks bound to a request, and why the chit is refused there (None: allowed, maybe pending)."""
        ...


class DecisionSink(Protocol):
    """Receives every ``require``/``require_owner`` decision (e.g. to log it)."""

    def __call__(self, principal: Principal, decision: Decision) -> None: ...


@dataclass(frozen=True)
class Principal:
    """Who calls (``subject``, through ``client_id``) and what the token lets it do (``permissions``).

    ``actors`` is the delegation chain of RFC 8693 token exchange (nested ``act`` claims), current
    actor first: ``actors[0]`` is the service that obtained this token by exchange and presents it,
    ``actors[1]`` the one that had called that service for the subject, and so on. ``subject`` stays
    the user throughout; ``permissions`` are already what the current actor may exercise for it. Only
    the current actor decides (``require_actor``); earlier actors are for audit and logs. An empty
    chain means that the subject calls directly (a user through its client, or a service account
    acting as itself).
    """

    subject: str
    client_id: str
    permissions: frozenset[str]
    expires_at: datetime
    actors: tuple[Actor, ...] = ()
    """The RFC 8693 actor chain, current actor first; empty when the subject calls directly."""
    token_id: str = ""
    kind: TokenKind = "jwt"
    session_id: str | None = None
    on_decision: DecisionSink | None = field(default=None, repr=False, compare=False)
    token: str = field(default="", repr=False, compare=False)
    """The bearer token as received (for forwarding: ``chit.attenuate``); kept out of ``repr``."""
    chit: ChitChecks | None = field(default=None, repr=False, compare=False)
    """A chit's own checks, evaluated by every decision; None for a JWT."""
    through: tuple[str, ...] = ()
    """The services that proved the chit came through them: each appended a third-party block stating
    ``through("<id>")`` signed by the key published for that id (block order). Always empty for a JWT."""
    issued_at: int | None = None
    """When a JWT was issued (``iat``, epoch seconds): a revocation of everything of its subject or client
    issued before a point in time compares it. None for a chit, which carries no issue time."""
    refusal: type[InsufficientScopeError] = field(default=InsufficientScopeError, repr=False, compare=False)
    """What a refused ``require*`` raises: ``InsufficientScopeError``, or a subclass of it that a framework
    answers by itself (the principals of ``chit.sdk.fastapi.Verifier`` raise one FastAPI answers 403)."""
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _wildcards: tuple[Permission, ...] = field(init=False, repr=False, compare=False)
    # (permissions, method, path) -> (the chit's bound checks, the principal bound to them): ``for_request``
    # builds a principal only when the chit's checks bind anew (at most once a second per route)
    _requests: dict[tuple[Any, ...], tuple[ChitChecks, Principal]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be an aware datetime")
        exact, wildcards = _classify(self.permissions)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_wildcards", wildcards)
        object.__setattr__(self, "_requests", {})

    @property
    def actor(self) -> Actor | None:
        """The current actor: the service that obtained this token by exchange and presents it (the
        outermost ``act``, ``actors[0]``), or None when nobody acts for the subject.

        Only the current actor decides (``require_actor``); ``subject`` is still the user it acts for.
        """
        return self.actors[0] if self.actors else None

    def holds(self, permission: str) -> bool:
        """Whether the granted permissions cover ``permission`` (a granted ``*`` segment matches any); for a
        chit, its own checks aside (``can`` evaluates them too)."""
        wanted = _parse(permission)
        if permission in self._exact:
            return True
        return any(granted.covers(wanted) for granted in self._wildcards)

    def holds_exactly(self, permissions: Iterable[str]) -> bool:
        """Whether every one of ``permissions`` is granted word for word: the quick yes of ``holds`` (False
        says nothing: a wildcard grant may still cover one)."""
        return self._exact.issuperset(permissions)

    def can(self, permission: str, *, resource: str | None = None) -> bool:
        """Whether ``permission`` may be exercised (on ``resource``, when given): granted, and for a chit
        allowed by its checks."""
        if self.chit is None:
            return self.holds(permission)
        return self.check(permission, resource=resource).allowed

    def owns(self, owner_id: str) -> bool:
        """Whether ``owner_id`` is the subject; for a chit, also allowed by its checks with ``owner(owner_id)``,
        as ``require_owner`` decides: a chit narrowed to a resource or an owner owns nothing a route body
        asks about without naming it."""
        if self.chit is None:
            return decisions.owns(self, owner_id)
        return self.check_owner(owner_id).allowed

    def owns_or_can(self, owner_id: str, permission: str, *, resource: str | None = None) -> bool:
        """The usual ownership rule: the owner, or whoever holds ``permission`` (e.g. ``...:read-any``)."""
        if self.chit is None:
            return decisions.owns_or_can(self, owner_id, permission)
        return self.check_owner(owner_id, permission, resource=resource).allowed

    def check(self, permission: str, *, resource: str | None = None) -> Decision:
        decision = decisions.check(self, permission)
        if self.chit is None or not decision.allowed:
            return decision
        return decisions.with_chit(decision, self.chit.failure((permission,), resource=resource))

    def check_owner(self, owner_id: str, unless: str | None = None, *, resource: str | None = None) -> Decision:
        decision = decisions.check_owner(self, owner_id, unless)
        if self.chit is None or not decision.allowed:
            return decision
        operations = (unless,) if unless is not None and decision.permission == unless else ()
        return decisions.with_chit(decision, self.chit.failure(operations, resource=resource, owner=owner_id))

    def require(self, permission: str, *, resource: str | None = None) -> None:
        """Raise ``InsufficientScopeError`` (with its reason) unless ``can(permission)``."""
        self._enforce(self.check(permission, resource=resource))

    def require_all(self, permissions: Iterable[str], *, resource: str | None = None) -> None:
        for permission in permissions:
            self.require(permission, resource=resource)

    def require_owner(self, owner_id: str, unless: str | None = None, *, resource: str | None = None) -> None:
        """Raise ``InsufficientScopeError`` unless the principal owns the resource or holds ``unless``; a chit's
        checks are evaluated with ``owner(owner_id)`` and ``resource(resource)`` when it is given."""
        self._enforce(self.check_owner(owner_id, unless, resource=resource))

    def check_actor(self, *service_ids: str | None, resource: str | None = None) -> Decision:
        decision = decisions.check_actor(self, service_ids)
        if self.chit is None or not decision.allowed:
            return decision
        return decisions.with_chit(decision, self.chit.failure(resource=resource))

    def require_actor(self, *service_ids: str | None, resource: str | None = None) -> None:
        """Raise ``InsufficientScopeError`` unless the current actor is one of ``service_ids``.

        The current actor is ``actor`` (matched on its ``client_id``, else its ``subject``): the service
        presenting a token it obtained by exchange for the subject. ``None`` stands for nobody acting for
        the subject, the subject calling itself: ``require_actor(None)`` accepts direct calls only,
        ``require_actor(None, "tagging")`` the subject itself or the tagging service acting for it.
        Earlier actors in the chain never decide. No ids at all is a ``TypeError``.
        """
        self._enforce(self.check_actor(*service_ids, resource=resource))

    def came_through(self, *service_ids: str) -> bool:
        """Whether the request provably came through every one of ``service_ids`` (``through``)."""
        return self.check_path(*service_ids).allowed

    def check_path(self, *service_ids: str) -> Decision:
        return decisions.check_path(self.through, service_ids)

    def require_path(self, *service_ids: str) -> None:
        """Raise ``InsufficientScopeError`` naming the services missing unless ``came_through(*service_ids)``:
        a chit carrying, for each of them, a third-party block ``through("<id>")`` signed by the key the auth
        server publishes for that service. The order of the services is not checked; a JWT never passes."""
        self._enforce(self.check_path(*service_ids))

    def for_request(
        self,
        permissions: Iterable[str],
        *,
        method: str | None = None,
        path: str | None = None,
        quiet: bool = False,
    ) -> Principal:
        """Require every permission a route requires (``InsufficientScopeError`` naming the first one missing,
        or the chit's failed check) and return the principal the route body decides with: for a chit,
        bound to the request's operations, method and path, its checks that need a resource left pending.

        ``quiet``: whoever asks knows that ``on_decision`` drops allowed decisions, so while every permission
        is granted word for word none is built; a refusal is always built and told."""
        required = tuple(permissions)
        if not (quiet and self.holds_exactly(required)):
            for permission in required:
                self._enforce(decisions.check(self, permission))
        if self.chit is None:
            return self
        bound, refusal = self.chit.at_request(required, method, path)
        if refusal is not None:
            self._enforce(Decision(False, required[0] if required else None, refusal))
        if bound is self.chit:
            return self
        key = (required, method, path)
        requests = self._requests
        known = requests.get(key)
        if known is not None and known[0] is bound:
            return known[1]
        principal = replace(self, chit=bound)
        if len(requests) >= MAX_BOUND_REQUESTS:
            requests.clear()
        requests[key] = (bound, principal)
        return principal

    def _enforce(self, decision: Decision) -> None:
        if self.on_decision is not None:
            self.on_decision(self, decision)
        if not decision.allowed:
            raise self.refusal(decision.reason)


@functools.lru_cache(maxsize=1024)
def _classify(permissions: frozenset[str]) -> tuple[frozenset[str], tuple[Permission, ...]]:
    """Exact grants and wildcard grants; many principals share one permission set, so once per set."""
    exact: set[str] = set()
    wildcards: list[Permission] = []
    for text in permissions:
        try:
            permission = _parse(text)
        except InvalidPermissionError:
            continue  # a malformed grant is never honoured
        if permission.resource == WILDCARD or permission.action == WILDCARD:
            wildcards.append(permission)
        else:
            exact.add(text)
    return frozenset(exact), tuple(wildcards)


def actors_from_claim(act: Mapping[str, Any] | None) -> tuple[Actor, ...]:
    """The delegation chain of nested ``act`` claims, current actor (outermost) first."""
    chain: list[Actor] = []
    while act is not None:
        if len(chain) >= MAX_DELEGATION_DEPTH:
            raise InvalidTokenError(f"token delegation chain is longer than {MAX_DELEGATION_DEPTH}")
        if not isinstance(act, Mapping):
            raise InvalidTokenError("token act claim is malformed")
        subject = act.get("sub")
        client_id = act.get("client_id")
        if not isinstance(subject, str) or not subject or not (client_id is None or isinstance(client_id, str)):
            raise InvalidTokenError("token act claim is malformed")
        chain.append(Actor(subject, client_id))
        act = act.get("act")
    return tuple(chain)


def principal_from_claims(
    claims: AccessTokenClaims,
    *,
    on_decision: DecisionSink | None = None,
    token: str = "",
    refusal: type[InsufficientScopeError] = InsufficientScopeError,
) -> Principal:
    """The principal a verified JWT access token describes."""
    return Principal(
        subject=claims.sub,
        client_id=claims.client_id,
        permissions=frozenset(claims.scope),
        expires_at=datetime.fromtimestamp(claims.exp, UTC),
        actors=actors_from_claim(claims.act) if claims.act is not None else (),
        token_id=claims.jti,
        kind="jwt",
        session_id=claims.sid,
        on_decision=on_decision,
        token=token,
        issued_at=claims.iat,
        refusal=refusal,
    )
