"""The brute-force throttle's counters, shared by every worker and replica."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from chit.storage import tables as t
from chit.storage.records import (
    ThrottleState,
)
from chit.storage.sql.connection import Connected


class Throttle(Connected):
    def throttle_states(self, keys: Iterable[str]) -> dict[str, ThrottleState]:
        keys = list(keys)
        with self._read() as conn:
            rows = conn.execute(select(t.login_throttle).where(t.login_throttle.c.key.in_(keys)))
            return {
                r.key: ThrottleState(r.key, r.failures, r.window_started_at, r.lock_level, r.locked_until) for r in rows
            }

    def update_throttle(
        self,
        keys: Iterable[str],
        step: Callable[[dict[str, ThrottleState | None]], dict[str, ThrottleState | None]],
    ) -> dict[str, ThrottleState | None]:
        """Read, decide and write the throttle state of ``keys`` in one write transaction.

        Nothing can change these keys in between, in any process: SQLite's ``BEGIN IMMEDIATE`` holds
        the whole database; PostgreSQL locks the rows (``SELECT ... FOR UPDATE``, in key order so that
        two of these transactions never wait on each other) after an insert-if-missing, so that two
        first attempts at once cannot both see "nothing counted". ``step`` gets every key's state,
        None when nothing is counted, and returns the new states: None clears a key, a key it leaves
        out keeps its state. An exception raised by ``step`` rolls the whole transaction back.
        Returns what ``step`` returned. Few statements: the lock is held by every login at once.
        """
        tl = t.login_throttle
        ordered = sorted(set(keys))
        with self._write() as conn:
            postgresql = conn.dialect.name == "postgresql"
            dialect_insert = postgresql_insert if postgresql else sqlite_insert
            if postgresql:  # a row lock cannot hold a row that does not exist yet: create it first
                fresh = {"failures": 0, "window_started_at": 0, "lock_level": 0, "locked_until": 0}
                conn.execute(dialect_insert(tl).values([{"key": k, **fresh} for k in ordered]).on_conflict_do_nothing())
            rows = conn.execute(select(tl).where(tl.c.key.in_(ordered)).order_by(tl.c.key).with_for_update()).all()
            present = {r.key for r in rows}
            states: dict[str, ThrottleState | None] = dict.fromkeys(ordered)
            for r in rows:
                if r.failures or r.lock_level:
                    states[r.key] = ThrottleState(r.key, r.failures, r.window_started_at, r.lock_level, r.locked_until)
            changes = step(dict(states))
            final = {key: changes.get(key, states[key]) for key in ordered}
            cleared = [key for key, after in final.items() if after is None and key in present]
            written = [
                {
                    "key": key,
                    "failures": after.failures,
                    "window_started_at": after.window_started_at,
                    "lock_level": after.lock_level,
                    "locked_until": after.locked_until,
                }
                for key, after in final.items()
                if after is not None and after != states[key]
            ]
            if cleared:
                conn.execute(delete(tl).where(tl.c.key.in_(cleared)))
            if written:
                upsert = dialect_insert(tl).values(written)
                columns = ("failures", "window_started_at", "lock_level", "locked_until")
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[tl.c.key], set_={c: upsert.excluded[c] for c in columns}
                    )
                )
        return changes
