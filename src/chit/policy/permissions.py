"""Permission names ``service:resource:action`` and how they match.

Rules (the whole grammar, pinned by tests):

* exactly three segments separated by ``:``;
* each segment is 1-64 characters of ``a-z 0-9 . _ -``, starting with a letter or digit, or is ``*``;
* the service segment is never ``*``: a permission always belongs to one service, so that a
  token's audience is always a list of concrete services;
* a granted ``*`` segment matches any value of that segment; a requested ``*`` is matched only by a
  granted ``*`` (asking for ``image-store:images:*`` needs a grant at least that wide).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from chit.errors import InvalidPermissionError

WILDCARD = "*"
CHIT_SERVICE = "chit"
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")


@dataclass(frozen=True, order=True, slots=True)
class Permission:
    service: str
    resource: str
    action: str

    @classmethod
    def parse(cls, text: str) -> Permission:
        if not isinstance(text, str):
            raise InvalidPermissionError(f"a permission is a string, not {type(text).__name__}")
        parts = text.split(":")
        if len(parts) != 3:
            raise InvalidPermissionError(
                f"{text!r} is not a permission: expected service:resource:action, e.g. image-store:images:read"
            )
        for name, part in zip(("service", "resource", "action"), parts, strict=True):
            if part == WILDCARD and name != "service":
                continue
            if part == WILDCARD:
                raise InvalidPermissionError(f"{text!r}: the service segment cannot be '*'")
            if not _SEGMENT.match(part):
                raise InvalidPermissionError(
                    f"{text!r}: the {name} segment {part!r} must be 1-64 characters of a-z, 0-9, "
                    f"'.', '_' or '-', starting with a letter or digit, or '*'"
                )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.service}:{self.resource}:{self.action}"

    def covers(self, other: Permission) -> bool:
        """Whether holding ``self`` is enough to exercise ``other``."""
        return (
            self.service == other.service
            and self.resource in (WILDCARD, other.resource)
            and self.action in (WILDCARD, other.action)
        )

    def meet(self, other: Permission) -> Permission | None:
        """The widest permission covered by both, or None when they share nothing."""
        if self.service != other.service:
            return None
        resource = _meet_segment(self.resource, other.resource)
        action = _meet_segment(self.action, other.action)
        if resource is None or action is None:
            return None
        return Permission(self.service, resource, action)


def _meet_segment(a: str, b: str) -> str | None:
    if a == WILDCARD:
        return b
    if b == WILDCARD or a == b:
        return a
    return None


def parse_all(texts: Iterable[str]) -> frozenset[Permission]:
    return frozenset(Permission.parse(t) for t in texts)


def is_covered(permission: Permission, held: Iterable[Permission]) -> bool:
    return any(h.covers(permission) for h in held)


def _is_pattern(permission: Permission) -> bool:
    return permission.resource == WILDCARD or permission.action == WILDCARD


def minimal(perms: Iterable[Permission]) -> frozenset[Permission]:
    """Drop every permission that another one in the set already covers."""
    items = frozenset(perms)
    # only a pattern covers a permission other than itself: without one, nothing is dropped
    patterns = [q for q in items if _is_pattern(q)]
    if not patterns:
        return items
    return frozenset(p for p in items if not any(q != p and q.covers(p) for q in patterns))


def intersect(held: Iterable[Permission], cap: Iterable[Permission] | None) -> frozenset[Permission]:
    """What ``held`` allows within ``cap`` (None: no cap)."""
    held = frozenset(held)
    if cap is None:
        return minimal(held)
    cap = frozenset(cap)
    # two exact permissions meet only when equal; every other meeting has a pattern on one side
    met = set(held & cap)
    for patterns, others in ((held, cap), (cap, held)):
        for p in patterns:
            if _is_pattern(p):
                met.update(m for o in others if (m := p.meet(o)) is not None)
    return minimal(met)


def covers_all(held: Iterable[Permission], wanted: Iterable[Permission]) -> list[Permission]:
    """The members of ``wanted`` that ``held`` does not cover, sorted (empty: all covered)."""
    held = frozenset(held)
    return sorted(w for w in wanted if not is_covered(w, held))


def audience(perms: Iterable[Permission]) -> list[str]:
    """The services a set of permissions names, sorted; ``["chit"]`` when it names none."""
    services = sorted({p.service for p in perms})
    return services or [CHIT_SERVICE]


def format_scope(perms: Iterable[Permission]) -> str:
    return " ".join(sorted(str(p) for p in perms))
