"""Scope arithmetic for issuing tokens: which permissions a request asks for, a client's cap, and what is granted.

Framework-free: the grants (``chit.server.grants``) read the request and the store, and decide here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from chit.errors import InvalidPermissionError, InvalidScopeError
from chit.policy.permissions import Permission, covers_all, format_scope, intersect

# Stored permissions repeat on every request (a user's grants, a manifest's lists): parse each once.
_parse = functools.lru_cache(maxsize=8192)(Permission.parse)


def parse_permissions(texts: Iterable[str]) -> frozenset[Permission]:
    """Stored permissions; an unparsable one (from a hand-edited database) is ignored, never granted."""
    result = set()
    for text in texts:
        try:
            result.add(_parse(text))
        except InvalidPermissionError:
            continue
    return frozenset(result)


def parse_scope(values: Iterable[str] | None) -> frozenset[Permission] | None:
    """The permissions a request's ``scope`` values name (None: no ``scope``); a malformed one is ``invalid_scope``."""
    if values is None:
        return None
    try:
        return frozenset(Permission.parse(v) for v in values)
    except InvalidPermissionError as exc:
        raise InvalidScopeError(str(exc)) from exc


def select_scope(available: frozenset[Permission], requested: frozenset[Permission] | None) -> frozenset[Permission]:
    """Everything available when nothing is requested; else exactly what was asked, if all is covered."""
    if requested is None:
        return intersect(available, None)
    missing = covers_all(available, requested)
    if missing:
        raise InvalidScopeError(f"not granted: {format_scope(missing)}")
    return requested


def client_cap(client_scope: Iterable[str] | None) -> frozenset[Permission] | None:
    """What a client's ``--scope`` list lets its tokens carry (None: the client caps nothing)."""
    return None if client_scope is None else parse_permissions(client_scope)
