"""Usernames (DESIGN §4 "Users"): ASCII only, and compared in one normalised form everywhere.

A username is 1-64 ASCII letters, digits and ``. _ @ + -``, starting with a letter or a digit (the
admin API's ``NewUser`` pattern and ``chit user add`` both hold to it). Two names name the same user
exactly when their ``username_key`` is equal: ASCII letters compare without regard to case (``KATE``
is ``kate``) and nothing else is folded.

Unicode case folding is deliberately not used: ``str.casefold()`` and ``str.lower()`` both turn the
Kelvin sign K (U+212A) into ``k``, so ``"\\u212aate"`` would log in as ``kate``. A name with a
non-ASCII character keeps that character in its key, while every stored user's key is ASCII: such a
name matches no user, and the brute-force throttle counts it like any other unknown name.
"""

from __future__ import annotations

import re
import string

USERNAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}"  # ASCII ranges: no re.IGNORECASE, no \w
USERNAME_RULE = "a username is 1-64 characters of letters, digits and . _ @ + -, starting with a letter or digit"

_USERNAME = re.compile(USERNAME_PATTERN)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def is_valid_username(name: str) -> bool:
    return _USERNAME.fullmatch(name) is not None


def username_key(name: str) -> str:
    """The one form usernames are compared in: ASCII letters lower-cased, every other character kept."""
    return name.translate(_ASCII_LOWER)
