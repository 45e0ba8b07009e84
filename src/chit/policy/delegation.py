"""The rules of delegation without I/O: RFC 8693 actor chains and what a delegated token may carry.

A service exchanging a user's token becomes the *current actor*: the issued ``act`` names it, with the
subject token's own ``act`` nested inside (RFC 8693 §4.1), so the chain only grows and is read current
actor first. What the token may carry only shrinks: the subject token's scope ∩ what the service may
exercise for users (its manifest's ``[on_behalf]``) ∩ what the user holds now ∩ what was asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from chit.errors import InvalidRequestError, InvalidScopeError, InvalidTargetError, InvalidTokenError
from chit.policy.permissions import Permission, format_scope, intersect
from chit.policy.principals import Actor, actors_from_claim
from chit.policy.scopes import select_scope

DEFAULT_MAX_DEPTH = 4


def chain_of(act: Mapping[str, Any] | None) -> tuple[Actor, ...]:
    """The actors of an ``act`` claim, current first; a malformed claim is ``invalid_request``."""
    try:
        return actors_from_claim(act)
    except InvalidTokenError as exc:
        raise InvalidRequestError(f"the subject token's act claim is unusable: {exc}") from None


def nested(act: Mapping[str, Any] | None, subject: str, client_id: str) -> dict[str, Any]:
    """The ``act`` of a token the client ``client_id`` (account ``subject``) obtains from one carrying ``act``."""
    claim: dict[str, Any] = {"sub": subject, "client_id": client_id}
    if act is not None:
        claim["act"] = dict(act)
    return claim


def check_chain(chain: Sequence[Actor], exchanging: str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Refuse a chain that would hold the exchanging service twice, or more than ``max_depth`` actors."""
    if any(exchanging in (actor.client_id, actor.subject) for actor in chain):
        names = " <- ".join(actor.name for actor in chain)
        raise InvalidRequestError(f"{exchanging} is already in the delegation chain ({names}): a cycle")
    if len(chain) + 1 > max_depth:
        raise InvalidRequestError(f"the delegation chain would hold {len(chain) + 1} actors; at most {max_depth}")


def names(chain: Iterable[Actor]) -> tuple[str, ...]:
    """The chain as the audit log keeps it: each actor's client id (else subject), current first."""
    return tuple(actor.name for actor in chain)


def delegated_permissions(
    caps: Iterable[Iterable[Permission]], requested: frozenset[Permission] | None
) -> frozenset[Permission]:
    """What every cap allows, narrowed to ``requested``; nothing at all is ``invalid_scope``."""
    available: frozenset[Permission] | None = None
    for cap in caps:
        available = intersect(cap, None) if available is None else intersect(available, cap)
    available = available or frozenset()
    if not available:
        raise InvalidScopeError("nothing the service may exercise for this user is in the token")
    granted = select_scope(available, requested)
    if not granted:
        raise InvalidScopeError("an empty scope grants nothing")
    return granted


def narrowed_audience(
    permissions: Iterable[Permission], targets: Sequence[str], is_registered: Callable[[str], bool]
) -> tuple[str, ...] | None:
    """The token's audience: None (the services its permissions name) when no target was named; else the
    named targets, each a service one of the permissions names (else ``invalid_target``, which says
    whether the service is unknown: ``is_registered`` is asked then only)."""
    if not targets:
        return None
    named = {p.service for p in permissions}
    for target in targets:
        if target not in named:
            if not is_registered(target):
                raise InvalidTargetError(f"no registered service {target[:100]!r}")
            raise InvalidTargetError(
                f"the delegated scope ({format_scope(permissions)}) names no permission of {target!r}"
            )
    return tuple(sorted(set(targets)))
