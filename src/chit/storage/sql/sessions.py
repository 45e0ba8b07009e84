"""Sessions: refresh-token families (RFC 6749 §6) and their rotating tokens."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, select, update

from chit.storage import tables as t
from chit.storage.records import (
    RefreshRecord,
    SessionRecord,
    new_id,
)
from chit.storage.sql.connection import Connected, _join


class Sessions(Connected):
    def start_family(
        self,
        *,
        client_pk: str,
        user_id: str,
        scope: Iterable[str],
        token_hash: str,
        now: int,
        idle_expires_at: int,
        absolute_expires_at: int,
    ) -> str:
        family_id = new_id("rtf_")
        with self._write() as conn:
            conn.execute(
                insert(t.refresh_families).values(
                    id=family_id,
                    client_id=client_pk,
                    user_id=user_id,
                    scope=_join(scope),
                    created_at=now,
                    expires_at=absolute_expires_at,
                )
            )
            conn.execute(
                insert(t.refresh_tokens).values(
                    token_hash=token_hash,
                    family_id=family_id,
                    issued_at=now,
                    expires_at=min(idle_expires_at, absolute_expires_at),
                )
            )
        return family_id

    def find_refresh(self, token_hash: str) -> RefreshRecord | None:
        rt, fam = t.refresh_tokens, t.refresh_families
        query = select(
            rt.c.token_hash,
            rt.c.family_id,
            rt.c.issued_at,
            rt.c.expires_at,
            rt.c.used_at,
            fam.c.client_id,
            fam.c.user_id,
            fam.c.scope,
            fam.c.expires_at.label("family_expires_at"),
            fam.c.revoked_at,
        ).join(fam, fam.c.id == rt.c.family_id)
        with self._read() as conn:
            row = conn.execute(query.where(rt.c.token_hash == token_hash)).first()
        if row is None:
            return None
        return RefreshRecord(
            token_hash=row.token_hash,
            family_id=row.family_id,
            client_pk=row.client_id,
            user_id=row.user_id,
            family_scope=frozenset(row.scope.split()),
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            family_expires_at=row.family_expires_at,
            used_at=row.used_at,
            family_revoked_at=row.revoked_at,
        )

    def rotate_refresh(self, old_hash: str, new_hash: str, *, now: int, idle_expires_at: int) -> bool:
        """Mark ``old_hash`` used and issue ``new_hash`` in its family; False if it was used already."""
        rt, fam = t.refresh_tokens, t.refresh_families
        with self._write() as conn:
            family = conn.execute(
                select(fam.c.id, fam.c.expires_at)
                .join(rt, rt.c.family_id == fam.c.id)
                .where(rt.c.token_hash == old_hash, fam.c.revoked_at.is_(None))
            ).first()
            if family is None:
                return False
            result = conn.execute(
                update(rt).where(rt.c.token_hash == old_hash, rt.c.used_at.is_(None)).values(used_at=now)
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                insert(rt).values(
                    token_hash=new_hash,
                    family_id=family.id,
                    issued_at=now,
                    expires_at=min(idle_expires_at, family.expires_at),
                )
            )
        return True

    def revoke_family(self, family_id: str, *, now: int, reason: str) -> bool:
        """Revoke a refresh-token family; False if it was revoked already."""
        fam = t.refresh_families
        with self._write() as conn:
            result = conn.execute(
                update(fam)
                .where(fam.c.id == family_id, fam.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
            return result.rowcount == 1

    def revoke_families_of(self, user_id: str, *, now: int, reason: str) -> list[str]:
        """Revoke every live refresh-token family of a user; the ids of those this revoked."""
        fam = t.refresh_families
        with self._write() as conn:
            live = fam.c.user_id == user_id, fam.c.revoked_at.is_(None)
            ids = sorted(conn.scalars(select(fam.c.id).where(*live)))
            if ids:
                conn.execute(update(fam).where(fam.c.id.in_(ids)).values(revoked_at=now, revoked_reason=reason))
            return ids

    def revoked_families(self, family_ids: Iterable[str]) -> frozenset[str]:
        ids = list(family_ids)
        if not ids:
            return frozenset()
        if self._sqlite and len(ids) == 1:  # one token's session, asked on every introspection and exchange
            sql = "SELECT id FROM refresh_families WHERE id = ? AND revoked_at IS NOT NULL"
            return frozenset(row[0] for row in self._sqlite_rows(sql, (ids[0],)))
        fam = t.refresh_families
        with self._read() as conn:
            return frozenset(conn.scalars(select(fam.c.id).where(fam.c.id.in_(ids), fam.c.revoked_at.is_not(None))))

    def sessions(self, user_id: str | None = None, *, session_id: str | None = None) -> list[SessionRecord]:
        fam = t.refresh_families
        query = select(fam, t.clients.c.client_id.label("wire_client_id")).join(
            t.clients, t.clients.c.id == fam.c.client_id
        )
        if user_id is not None:
            query = query.where(fam.c.user_id == user_id)
        if session_id is not None:
            query = query.where(fam.c.id == session_id)
        with self._read() as conn:
            return [
                SessionRecord(
                    r.id,
                    r.wire_client_id,
                    r.user_id,
                    frozenset(r.scope.split()),
                    r.created_at,
                    r.expires_at,
                    r.revoked_at,
                    r.revoked_reason,
                )
                for r in conn.execute(query.order_by(fam.c.created_at))
            ]

    def session(self, session_id: str) -> SessionRecord | None:
        found = self.sessions(session_id=session_id)
        return found[0] if found else None
