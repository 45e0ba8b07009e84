"""Unique ids for hot paths (token ids, audit event ids, request ids), without a system call each.

A 64-bit random prefix drawn once per process (again in a forked child) and a counter: unique across
processes and restarts, 32 hex characters like a UUID. ``uuid4()`` reads the kernel's random source
on every call, and under load waiting to get the GIL back after that read cost more than the whole
id. These ids name things; they are never secrets (those come from ``secrets``).
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = ""
_counter = itertools.count()


def _reset() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = itertools.count()


_reset()
os.register_at_fork(after_in_child=_reset)


def unique_id() -> str:
    """32 hex characters, never repeated."""
    return f"{_prefix}{next(_counter):016x}"  # next() on itertools.count is atomic under the GIL
