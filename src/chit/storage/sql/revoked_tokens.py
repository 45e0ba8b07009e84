"""Revoked access tokens and chits (RFC 7009), kept until they would have expired."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from chit.storage import tables as t
from chit.storage.sql.connection import Connected, insert_ignoring_duplicates


class RevokedTokens(Connected):
    def revoke_access_token(self, jti: str, *, expires_at: int, now: int) -> bool:
        """Revoke ``jti``; False when it was revoked already."""
        with self._write() as conn:
            added = insert_ignoring_duplicates(
                conn, t.revoked_tokens, {"jti": jti, "expires_at": expires_at, "revoked_at": now}, ["jti"]
            )
            conn.execute(delete(t.revoked_tokens).where(t.revoked_tokens.c.expires_at < now - 3600))
        return added == 1

    def is_access_token_revoked(self, jti: str) -> bool:
        if self._sqlite:  # asked of every token introspected or exchanged
            return bool(self._sqlite_rows("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)))
        with self._read() as conn:
            return conn.scalar(select(t.revoked_tokens.c.jti).where(t.revoked_tokens.c.jti == jti)) is not None

    def revoke_chit(self, revocation_id: str, *, expires_at: int, now: int) -> bool:
        """Revoke the chits holding the block of ``revocation_id``; False when it was revoked already."""
        table = t.revoked_chits
        with self._write() as conn:
            added = insert_ignoring_duplicates(
                conn,
                table,
                {"revocation_id": revocation_id, "expires_at": expires_at, "revoked_at": now},
                ["revocation_id"],
            )
            conn.execute(delete(table).where(table.c.expires_at < now - 3600))
        return added == 1

    def revoked_chit_ids(self, revocation_ids: Iterable[str]) -> frozenset[str]:
        """Which of ``revocation_ids`` (a chit's, one per block) are revoked."""
        ids = list(revocation_ids)
        if not ids:
            return frozenset()
        table = t.revoked_chits
        with self._read() as conn:
            found = conn.scalars(select(table.c.revocation_id).where(table.c.revocation_id.in_(ids)))
            return frozenset(found)
