"""Brute-force protection for the password grant (DESIGN §4).

Per account: after ``account_max_failures`` failed logins in a row the account is locked for
``lock_seconds``, doubling with each further lock up to ``max_lock_seconds``; attempts during a lock
are refused without counting, even with the right password; after a lock the next failure locks
again; only a successful login resets the count. Per source address: the same schedule once
``source_max_failures`` failures fall within ``source_window`` seconds; the source's count starts
over when a window passes, and a success does not reset it (an attacker could log into their own
account to clear it). Unknown accounts are counted exactly like real ones.

State lives in the database so that every worker and replica enforces one limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from chit.errors import TooManyAttemptsError
from chit.storage.records import ThrottleState
from chit.storage.repository import Store


@dataclass(frozen=True)
class ThrottlePolicy:
    account_max_failures: int = 10
    source_max_failures: int = 100
    source_window: int = 15 * 60
    lock_seconds: int = 60
    max_lock_seconds: int = 15 * 60

    def lock_duration(self, level: int) -> int:
        return int(min(self.lock_seconds * 2 ** max(level - 1, 0), self.max_lock_seconds))


def account_key(username: str) -> str:
    return "account:" + username.casefold()[:180]


def source_key(address: str) -> str:
    return "source:" + address[:180]


class LoginThrottle:
    def __init__(self, store: Store, policy: ThrottlePolicy) -> None:
        self.store = store
        self.policy = policy

    def check(self, username: str, address: str, now: int) -> None:
        """Raise ``TooManyAttemptsError`` while the account or the source is locked."""
        states = self.store.throttle_states([account_key(username), source_key(address)])
        locked_until = max((s.locked_until for s in states.values()), default=0)
        if locked_until > now:
            raise TooManyAttemptsError(locked_until - now)

    def failed(self, username: str, address: str, now: int) -> None:
        policy = self.policy

        def account_step(before: ThrottleState | None) -> ThrottleState:
            failures = (before.failures if before else 0) + 1
            level = before.lock_level if before else 0
            locked_until = before.locked_until if before else 0
            if failures >= policy.account_max_failures:
                level += 1
                locked_until = now + policy.lock_duration(level)
            return ThrottleState(account_key(username), failures, now, level, locked_until)

        def source_step(before: ThrottleState | None) -> ThrottleState:
            if before is None or now - before.window_started_at >= policy.source_window:
                failures, start, level = 0, now, 0
            else:
                failures, start, level = before.failures, before.window_started_at, before.lock_level
            failures += 1
            locked_until = before.locked_until if before else 0
            if failures >= policy.source_max_failures:
                level += 1
                locked_until = now + policy.lock_duration(level)
            return ThrottleState(source_key(address), failures, start, level, locked_until)

        self.store.record_failure([account_key(username)], account_step)
        self.store.record_failure([source_key(address)], source_step)

    def succeeded(self, username: str) -> None:
        self.store.clear_throttle([account_key(username)])
