"""Brute-force protection for the password grant (DESIGN §4).

Per account: after ``account_max_failures`` failed logins in a row the account is locked for
``lock_seconds``, doubling with each further lock up to ``max_lock_seconds``; attempts during a lock
are refused without counting, even with the right password; after a lock the next failure locks
again; only a successful login resets the count. Per source address (an IPv6 address by its /64, the
connection's peer unless ``chit serve --forwarded-allow-ips`` names proxies to believe): the same schedule once
``source_max_failures`` failures fall within ``source_window`` seconds; the source's count starts
over when a window passes, and a success does not reset it (an attacker could log into their own
account to clear it). Unknown accounts are counted exactly like real ones.

State lives in the database so that every worker and replica enforces one limit, and an attempt is
counted *before* its password is checked: ``reserve`` locks both rows (account and source) in one
write transaction, refuses while either is locked, and otherwise counts the attempt as a failure at
once, locking when that reaches the limit. However many attempts arrive together, in however many
processes, no more of them reach Argon2 than the limit allows. A success then takes its own
attempt back (``succeeded``): the account's count is cleared unless a lock is in force at that
moment (a success never lifts a lock, except the one its own reservation set: that attempt was no
failure after all, and every attempt refused meanwhile was refused without counting); the source
keeps its count, less this one attempt.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from chit.errors import TooManyAttemptsError
from chit.policy.usernames import username_key
from chit.storage.records import ThrottleState
from chit.storage.sql.store import Store


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
    return "account:" + username_key(username)[:180]


def source_key(address: str) -> str:
    """The key a source address counts under: an IPv6 address by its /64 (what one line or host is given, so
    that its 2**64 addresses share one budget), an IPv4-mapped one as IPv4; anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "source:" + address[:180]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"source:{ip.ipv4_mapped}"
        return f"source:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"source:{ip}"


@dataclass(frozen=True)
class Attempt:
    """A login attempt counted in advance: what its reservation wrote, so that a success can take it back."""

    account_key: str
    source_key: str
    account: ThrottleState  # the account's state as the reservation left it
    source: ThrottleState  # the source's state as the reservation left it...
    source_before: ThrottleState | None  # ...and as it found it


class LoginThrottle:
    def __init__(self, store: Store, policy: ThrottlePolicy) -> None:
        self.store = store
        self.policy = policy

    def reserve(self, username: str, address: str, now: int) -> Attempt:
        """Count one login attempt as a failure before its password is checked.

        Raises ``TooManyAttemptsError``, counting nothing, while the account or the source is locked.
        """
        akey, skey = account_key(username), source_key(address)
        # a lock seen by a plain read is in force: refuse without taking the write lock (the cheap
        # path for an attack's flood); whether to count is only decided in the write transaction
        self._refuse_if_locked(self.store.throttle_states([akey, skey]).values(), now)
        reserved: list[Attempt] = []

        def step(states: dict[str, ThrottleState | None]) -> dict[str, ThrottleState | None]:
            self._refuse_if_locked(states.values(), now)  # raised here, it rolls back: nothing counted
            account = self._account_failure(akey, states[akey], now)
            source = self._source_failure(skey, states[skey], now)
            reserved.append(Attempt(akey, skey, account, source, states[skey]))
            return {akey: account, skey: source}

        self.store.update_throttle([akey, skey], step)
        return reserved[0]

    def succeeded(self, attempt: Attempt, now: int) -> None:
        """The attempt's password was right: reset the account's count, and take the attempt off the source's."""

        def step(states: dict[str, ThrottleState | None]) -> dict[str, ThrottleState | None]:
            changes: dict[str, ThrottleState | None] = {}
            account = states[attempt.account_key]
            # a lock in force stays, unless it is the one this attempt's own reservation set
            if account is None or account.locked_until <= now or account == attempt.account:
                changes[attempt.account_key] = None
            source = states[attempt.source_key]
            if source == attempt.source:  # nothing counted since: as if the attempt had never been counted
                changes[attempt.source_key] = attempt.source_before
            elif (
                source is not None
                and source.window_started_at == attempt.source.window_started_at
                and source.failures > 0
            ):  # counted since (a lock set meanwhile stays): this attempt no longer counts in its window
                changes[attempt.source_key] = dataclasses.replace(source, failures=source.failures - 1)
            return changes

        self.store.update_throttle([attempt.account_key, attempt.source_key], step)

    @staticmethod
    def _refuse_if_locked(states: Iterable[ThrottleState | None], now: int) -> None:
        locked_until = max((s.locked_until for s in states if s is not None), default=0)
        if locked_until > now:
            raise TooManyAttemptsError(locked_until - now)

    def _account_failure(self, key: str, before: ThrottleState | None, now: int) -> ThrottleState:
        policy = self.policy
        failures = (before.failures if before else 0) + 1
        level = before.lock_level if before else 0
        locked_until = before.locked_until if before else 0
        if failures >= policy.account_max_failures:
            level += 1
            locked_until = now + policy.lock_duration(level)
        return ThrottleState(key, failures, now, level, locked_until)

    def _source_failure(self, key: str, before: ThrottleState | None, now: int) -> ThrottleState:
        policy = self.policy
        if before is None or now - before.window_started_at >= policy.source_window:
            failures, start, level = 0, now, 0
        else:
            failures, start, level = before.failures, before.window_started_at, before.lock_level
        failures += 1
        locked_until = before.locked_until if before else 0
        if failures >= policy.source_max_failures:
            level += 1
            locked_until = now + policy.lock_duration(level)
        return ThrottleState(key, failures, start, level, locked_until)
