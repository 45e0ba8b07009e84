"""The revocation feed's events (DESIGN §4, "Revocation feed"), in commit order.

A reader follows the feed by cursor (``id > after``), so an id must never become visible after a
larger one: on PostgreSQL two transactions can take ids 6 and 7 and commit 7 first, and a reader
that saw 7 would skip 6 for good. Appending therefore takes a transaction-scoped advisory lock
before it draws its id, so ids are drawn in commit order; SQLite has one writer at a time anyway.
Revocations are rare next to issuance, so serialising them costs nothing that matters.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text

from chit.storage import tables as t
from chit.storage.records import RevocationEvent
from chit.storage.sql.connection import Connected

# pg_advisory_xact_lock's key for the feed: any constant no other lock of chit's uses
FEED_LOCK = 0x63686974_0001
# an event is kept this long after the last token it concerns expired, for a service catching up late
RETENTION = 3600


def _event(row: Any) -> RevocationEvent:
    id_, kind, value, not_before, expires, created_at = row
    not_before = None if not_before is None else int(not_before)
    return RevocationEvent(int(id_), str(kind), str(value), int(expires), not_before, int(created_at))


class RevocationEvents(Connected):
    def append_revocation_event(
        self, kind: str, value: str, *, expires: int, not_before: int | None = None, now: int
    ) -> RevocationEvent:
        """Append an event and return it with its id; call it inside ``atomically`` with the revocation
        it announces, so that both are written or neither."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK})
            created_at = time.time_ns() // 1000
            table = t.revocation_events
            values = {
                "kind": kind,
                "value": value,
                "not_before": not_before,
                "expires": expires,
                "created_at": created_at,
            }
            id_ = conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
            self._prune(conn, now)
        return RevocationEvent(int(id_), kind, value, expires, not_before, created_at)

    def _prune(self, conn: Connection, now: int) -> None:
        table = t.revocation_events
        conn.execute(delete(table).where(table.c.expires < now - RETENTION))

    def revocation_events(self, after: int, *, limit: int, now: int) -> list[RevocationEvent]:
        """The events after the cursor ``after``, oldest first, at most ``limit``; those whose tokens
        have all expired are left out (a service has nothing left to refuse)."""
        table = t.revocation_events
        columns = (table.c.id, table.c.kind, table.c.value, table.c.not_before, table.c.expires, table.c.created_at)
        query = select(*columns).where(table.c.id > after, table.c.expires >= now).order_by(table.c.id).limit(limit)
        with self._read() as conn:
            return [_event(row) for row in conn.execute(query)]

    def last_revocation_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a follower that needs no history starts."""
        with self._read() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(t.revocation_events.c.id), 0))) or 0)

    def revoked_values(self, kind: str, *, now: int) -> dict[str, int | None]:
        """The values revoked under ``kind`` whose tokens may still be valid, each with its ``not_before``
        (signing keys and clients, whose revocation lives only in the feed)."""
        table = t.revocation_events
        query = select(table.c.value, table.c.not_before).where(table.c.kind == kind, table.c.expires >= now)
        with self._read() as conn:
            found: dict[str, int | None] = {}
            for value, not_before in conn.execute(query):
                previous = found.get(value)
                found[value] = not_before if previous is None or (not_before or 0) > previous else previous
            return found
