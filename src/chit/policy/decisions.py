"""Decisions with their reasons: ``Decision``, and the permission, ownership and actor checks that produce one.

Ownership is by stable id: whoever asks owns a resource when the resource's owner id is its subject.
The actor check looks at the current actor alone (RFC 8693 §4.1): earlier actors never decide.
The path check (``check_path``) looks at the services that proved, in a chit, that they handled the request.
These rules read what the token grants (``holds``); a chit's own checks come on top of them
(``with_chit``): a decision they allow stands only if the chit's checks pass with the facts it states.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one authorization question, with the reason it can be logged and tested by."""

    allowed: bool
    permission: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Asker(Protocol):
    """What a decision needs to know of whoever asks (a ``chit.policy.principals.Principal``)."""

    @property
    def subject(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def actor(self) -> Named | None: ...

    def holds(self, permission: str) -> bool:
        """Whether the token grants ``permission`` (a chit's own checks aside)."""
        ...


def owns(asker: Asker, owner_id: str) -> bool:
    return owner_id == asker.subject


def owns_or_can(asker: Asker, owner_id: str, permission: str) -> bool:
    """The usual ownership rule: the owner, or whoever holds ``permission`` (e.g. ``...:read-any``)."""
    return owns(asker, owner_id) or asker.holds(permission)


def check(asker: Asker, permission: str) -> Decision:
    if asker.holds(permission):
        return Decision(True, permission, f"holds {permission}")
    return Decision(False, permission, missing(asker, permission))


def check_owner(asker: Asker, owner_id: str, unless: str | None = None) -> Decision:
    """Allowed to the owner, or to whoever holds ``unless`` when it is given."""
    if owns(asker, owner_id):
        return Decision(True, None, "owner of the resource")
    if unless is None:
        return Decision(False, None, "not the owner of the resource")
    if asker.holds(unless):
        return Decision(True, unless, f"holds {unless}")
    return Decision(False, unless, "not the owner of the resource and " + missing(asker, unless))


def check_actor(asker: Asker, service_ids: Iterable[str | None]) -> Decision:
    """Allowed when the current actor is one of ``service_ids``; ``None`` among them stands for the subject
    calling itself (nobody acts for it). At least one id is required."""
    allowed = tuple(service_ids)
    if not allowed:
        raise TypeError("require_actor needs at least one service id (None: the subject itself calls)")
    for service_id in allowed:
        if service_id is not None and not isinstance(service_id, str):
            raise TypeError(f"a service id is a string or None, not {type(service_id).__name__}")
    actor = asker.actor
    current = None if actor is None else actor.name
    who = "nobody acts for the subject" if current is None else f"acting for the subject: {current}"
    if current in allowed:
        return Decision(True, None, who)
    services = [service_id for service_id in allowed if service_id is not None]
    if not services:
        return Decision(False, None, f"{who}; only the subject itself may")
    if None in allowed:
        services.insert(0, "the subject itself")
    return Decision(False, None, f"{who}; allowed: {', '.join(services)}")


def check_path(through: Sequence[str], service_ids: Iterable[str]) -> Decision:
    """Allowed when every one of ``service_ids`` is among ``through``, the services that proved (each with a
    block signed by its own service key) that the request came through them. At least one id is required."""
    wanted = tuple(service_ids)
    if not wanted:
        raise TypeError("require_path needs at least one service id")
    for service_id in wanted:
        if not isinstance(service_id, str) or not service_id:
            raise TypeError("a service id is a non-empty string")
    proven = f"proven: {', '.join(through)}" if through else "no service proved that it handled the request"
    missing = [service_id for service_id in wanted if service_id not in through]
    if not missing:
        return Decision(True, None, f"came through {', '.join(wanted)}")
    return Decision(False, None, f"no proof that the request came through {', '.join(missing)} ({proven})")


def with_chit(decision: Decision, refusal: str | None) -> Decision:
    """``decision`` once the chit's checks have been evaluated for it: refused with their reason (which names
    the failed check) when they fail, unchanged otherwise."""
    if decision.allowed and refusal is not None:
        return Decision(False, decision.permission, refusal)
    return decision


def missing(asker: Asker, permission: str) -> str:
    """The reason a denial gives: the permission, and who (the acting service when one acts) lacks it."""
    action = permission.rsplit(":", 1)[-1]
    actor = asker.actor
    who = f"acting service {actor.name}" if actor else f"{asker.subject} (client {asker.client_id})"
    return f"missing {permission}; {who} may not {action}"
