"""The audit log: appended in hash-chained batches, read in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import insert, select, text

from chit.storage import tables as t
from chit.storage.records import (
    AuditRecord,
)
from chit.storage.sql.connection import Connected

GENESIS_HASH = "0" * 64


# Serialises appends to the audit hash chain across processes on PostgreSQL (SQLite's writer lock does it there).
_AUDIT_LOCK_KEY = 0x636869745F617564  # "chit_aud"


def _audit(row: Any) -> AuditRecord:
    return AuditRecord(
        row.seq,
        row.id,
        row.time,
        row.type,
        row.outcome,
        row.request_id,
        row.client_id,
        row.subject,
        row.actors,
        row.token_id,
        row.source,
        row.detail,
        row.prev_hash,
        row.hash,
    )


class Audit(Connected):
    def append_audit(self, rows: Sequence[dict[str, Any]], chain: Callable[[str, dict[str, Any]], str]) -> None:
        """Append events in order, each hash-chained to the one before (``chain(prev_hash, row)``)."""
        if not rows:
            return
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
            prev = conn.scalar(select(t.audit_events.c.hash).order_by(t.audit_events.c.seq.desc()).limit(1))
            prev = prev or GENESIS_HASH
            values = []
            for row in rows:
                digest = chain(prev, row)
                values.append({**row, "prev_hash": prev, "hash": digest})
                prev = digest
            conn.execute(insert(t.audit_events), values)

    def audit_events(
        self,
        *,
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
        filters: dict[str, str] | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[AuditRecord]:
        ev = t.audit_events
        query = select(ev).where(ev.c.seq > after_seq)
        for column, value in (filters or {}).items():
            query = query.where(ev.c[column] == value)
        if since is not None:
            query = query.where(ev.c.time >= since)
        if until is not None:
            query = query.where(ev.c.time < until)
        query = query.order_by(ev.c.seq.desc() if newest_first else ev.c.seq).limit(limit)
        with self._read() as conn:
            return [_audit(r) for r in conn.execute(query)]

    def iter_audit(self, batch: int = 1000) -> Iterator[AuditRecord]:
        after = 0
        while True:
            rows = self.audit_events(after_seq=after, limit=batch)
            if not rows:
                return
            yield from rows
            after = rows[-1].seq
