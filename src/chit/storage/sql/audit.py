"""The audit log: appended in hash-chained batches, read in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.dialects import sqlite

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


_SQLITE_HEAD = "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1"
# the table's own INSERT, compiled once for sqlite3's positional parameters (every column but ``seq``)
_SQLITE_INSERT = insert(t.audit_events).compile(
    dialect=sqlite.dialect(), column_keys=[column.name for column in t.audit_events.c if column.name != "seq"]
)
_SQLITE_APPEND = str(_SQLITE_INSERT)
_SQLITE_ORDER = tuple(_SQLITE_INSERT.positiontup or ())


def _chained(
    rows: Sequence[dict[str, Any]], prev: str, chain: Callable[[str, dict[str, Any]], str]
) -> Iterator[tuple[dict[str, Any], str, str]]:
    """Each row with the hash before it and its own."""
    for row in rows:
        digest = chain(prev, row)
        yield row, prev, digest
        prev = digest


class Audit(Connected):
    def append_audit(self, rows: Sequence[dict[str, Any]], chain: Callable[[str, dict[str, Any]], str]) -> None:
        """Append events in order, each hash-chained to the one before (``chain(prev_hash, row)``)."""
        if not rows:
            return
        with self._loop_transaction() as cursor:
            if cursor is not None:  # the group commit of an event loop
                head = cursor.execute(_SQLITE_HEAD).fetchone()
                chained = _chained(rows, head[0] if head else GENESIS_HASH, chain)
                cursor.executemany(
                    _SQLITE_APPEND,
                    [
                        tuple({**row, "prev_hash": before, "hash": digest}[name] for name in _SQLITE_ORDER)
                        for row, before, digest in chained
                    ],
                )
                return
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
            prev = conn.scalar(select(t.audit_events.c.hash).order_by(t.audit_events.c.seq.desc()).limit(1))
            prev = prev or GENESIS_HASH
            values = [
                {**row, "prev_hash": before, "hash": digest} for row, before, digest in _chained(rows, prev, chain)
            ]
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
