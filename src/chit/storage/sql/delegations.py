"""Deferred delegations: a service's handle to act for a user later, stored hashed.

A redemption is counted (``redemptions``, ``last_used_at``) by its ``delegation.redeemed`` audit event, in
the audit's own transaction: a trigger (migration 0008) does it, so that the count and the log agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, insert, select, text, update

from chit.errors import NotFoundError, RefusedError
from chit.storage import tables as t
from chit.storage.records import DelegationRecord
from chit.storage.sql.connection import Connected, _join


def _delegation(row: Any) -> DelegationRecord:
    return DelegationRecord(
        row.id,
        row.subject_id,
        row.client_id,
        row.secret_hash,
        frozenset(row.scope.split()),
        row.job_id,
        row.act,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
        row.redemptions,
    )


# the columns in ``DelegationRecord``'s order
_SQLITE_DELEGATION = (
    "SELECT id, subject_id, client_id, secret_hash, scope, job_id, act, created_at, expires_at, revoked_at,"
    " last_used_at, redemptions FROM delegations WHERE id = ?"
)


class Delegations(Connected):
    def create_delegation(self, record: DelegationRecord, *, max_active: int, now: int) -> None:
        """Store a new delegation, unless its service already holds ``max_active`` live ones for the user."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":  # count-then-insert: concurrent creators take turns
                key = f"delegations {record.subject_id} {record.client_id}"
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            active = conn.scalar(
                select(func.count())
                .select_from(t.delegations)
                .where(
                    t.delegations.c.subject_id == record.subject_id,
                    t.delegations.c.client_id == record.client_id,
                    t.delegations.c.revoked_at.is_(None),
                    t.delegations.c.expires_at > now,
                )
            )
            if (active or 0) >= max_active:
                raise RefusedError(f"{record.client_id} already holds {max_active} live delegations for this user")
            conn.execute(
                insert(t.delegations).values(
                    id=record.id,
                    subject_id=record.subject_id,
                    client_id=record.client_id,
                    secret_hash=record.secret_hash,
                    scope=_join(record.scope),
                    job_id=record.job_id,
                    act=record.act,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                    redemptions=0,
                )
            )

    def delegation(self, delegation_id: str) -> DelegationRecord | None:
        if self._sqlite:  # read by every redemption
            rows = self._sqlite_rows(_SQLITE_DELEGATION, (delegation_id,))
            if not rows:
                return None
            id, subject_id, client_id, secret_hash, scope, job_id, act, created, expires, revoked, used, count = rows[0]
            return DelegationRecord(
                id, subject_id, client_id, secret_hash, frozenset(scope.split()), job_id, act, created, expires,
                revoked, used, count,
            )  # fmt: skip
        with self._read() as conn:
            row = conn.execute(select(t.delegations).where(t.delegations.c.id == delegation_id)).first()
        return None if row is None else _delegation(row)

    def delegations(
        self, subject_id: str | None = None, *, client_id: str | None = None, ids: Iterable[str] | None = None
    ) -> list[DelegationRecord]:
        query = select(t.delegations).order_by(t.delegations.c.created_at, t.delegations.c.id)
        if subject_id is not None:
            query = query.where(t.delegations.c.subject_id == subject_id)
        if client_id is not None:
            query = query.where(t.delegations.c.client_id == client_id)
        if ids is not None:
            query = query.where(t.delegations.c.id.in_(list(ids)))
        with self._read() as conn:
            return [_delegation(r) for r in conn.execute(query)]

    def revoke_delegation(self, delegation_id: str, now: int) -> bool:
        """Revoke a delegation; False if it was revoked already, ``NotFoundError`` if there is none."""
        with self._write() as conn:
            if conn.scalar(select(t.delegations.c.id).where(t.delegations.c.id == delegation_id)) is None:
                raise NotFoundError(f"no delegation {delegation_id!r}")
            result = conn.execute(
                update(t.delegations)
                .where(t.delegations.c.id == delegation_id, t.delegations.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return result.rowcount == 1
