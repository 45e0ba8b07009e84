"""Control characters in text from outside: one rule for the token endpoint, the admin API and the CLI.

A name, an id, a password or any other one-line value holds no C0 control character but tab, nor
DEL (``CONTROL_CHARACTERS``). Free text (a description) may break lines, but never holds NUL:
PostgreSQL cannot store it in a text column, and SQLite would keep what a later move refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CONTROL_CHARACTERS = r"[\x00-\x08\x0a-\x1f\x7f]"  # tab is allowed; as a bytes pattern, exact on UTF-8 too
CONTROL_PROBLEM = "contains control characters"
NUL_PROBLEM = "contains a NUL character"

_CONTROL = re.compile(CONTROL_CHARACTERS)


def text_problem(value: str, *, free_text: bool = False) -> str | None:
    """Why ``value`` is refused (``CONTROL_PROBLEM``, ``NUL_PROBLEM`` for free text), or None."""
    if free_text:
        return NUL_PROBLEM if "\x00" in value else None
    return CONTROL_PROBLEM if _CONTROL.search(value) else None


def texts_problem(values: Iterable[object], *, free_text: bool = False) -> str | None:
    """The problem of the first string among ``values`` that has one (other values are not text)."""
    for value in values:
        if isinstance(value, str) and (problem := text_problem(value, free_text=free_text)):
            return problem
    return None
