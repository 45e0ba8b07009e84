"""Secrets at rest: Argon2id for passwords, SHA-256 for high-entropy secrets, constant-time compares.

Client secrets and refresh tokens are 256-bit random values, so one SHA-256 is enough to store them
safely and keeps the check at well under a microsecond; passwords are human-chosen and get Argon2id.

Password checks run in a small pool of their own: as many at once as the process has cores (each
spreads over its 4 lanes, so that fills them; more would only add 64 MiB each and context switches),
in threads of lower CPU priority, whose lane threads inherit it: a flood of logins takes the CPU that
cheap requests leave, instead of sharing it evenly with them (a thread per lane would outnumber the
event loop's one thread many times over).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults: Argon2id, t=3, m=64 MiB, p=4; OWASP's minimum is m=19 MiB, t=2, p=1
_hasher = PasswordHasher()
VERIFY_NICENESS = 10  # CPU weight 110 against a normal thread's 1024 (Linux)


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _lower_priority() -> None:
    if sys.platform == "linux":  # per thread on Linux; elsewhere the call would slow down the whole process
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VERIFY_NICENESS)


_verifications = ThreadPoolExecutor(_cores(), thread_name_prefix="chit-argon2", initializer=_lower_priority)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user is unknown, so that the answer takes as long as for a real one."""
    return _hasher.hash(secrets.token_urlsafe(16))


MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def warm_up() -> None:
    """Compute the stand-in hash now, so the first login of an unknown user takes no longer than others."""
    _dummy_hash()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; always does the full Argon2 work, even without a hash."""
    return _verifications.submit(_verify, password_hash, password).result()


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_new_password(password: str) -> str | None:
    """Why ``password`` cannot be used, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    return None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, secret_hash: str | None) -> bool:
    expected = secret_hash or "0" * 64
    return hmac.compare_digest(hash_secret(secret), expected) and secret_hash is not None


API_KEY_PREFIX = "chit_ak_"


def format_api_key(key_id: str, secret: str) -> str:
    """``chit_ak_<key id>.<secret>``: recognisable by secret scanners, and the id finds the row."""
    return f"{API_KEY_PREFIX}{key_id}.{secret}"


def parse_api_key(presented: str) -> tuple[str, str] | None:
    return _parse_handle(presented, API_KEY_PREFIX)


DEFERRED_DELEGATION_PREFIX = "chit_dd_"


def format_deferred_delegation(delegation_id: str, secret: str) -> str:
    """``chit_dd_<delegation id>.<secret>``, shaped like an API key for the same reasons."""
    return f"{DEFERRED_DELEGATION_PREFIX}{delegation_id}.{secret}"


def parse_deferred_delegation(presented: str) -> tuple[str, str] | None:
    return _parse_handle(presented, DEFERRED_DELEGATION_PREFIX)


def _parse_handle(presented: str, prefix: str) -> tuple[str, str] | None:
    """The id and secret of ``<prefix><id>.<secret>``, or None when it is not shaped so."""
    if not presented.startswith(prefix):
        return None
    handle_id, sep, secret = presented[len(prefix) :].partition(".")
    if not sep or not handle_id or not secret or len(handle_id) > 40:
        return None
    return handle_id, secret
