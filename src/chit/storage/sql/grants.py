"""Grants: which principal holds which role, and what that adds up to."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, delete, select

from chit.errors import NotFoundError
from chit.storage import tables as t
from chit.storage.sql.connection import Connected, insert_ignoring_duplicates

SQLITE_PERMISSIONS_OF = (
    "SELECT role_permissions.permission FROM role_permissions"
    " JOIN grants ON grants.role = role_permissions.role WHERE grants.principal_id = ?"
)
_PERMISSIONS_OF = (
    select(t.role_permissions.c.permission)
    .join(t.grants, t.grants.c.role == t.role_permissions.c.role)
    .where(t.grants.c.principal_id == bindparam("principal_id"))
)


class Grants(Connected):
    def grant(self, principal_id: str, role: str, now: int) -> bool:
        """Grant ``role``; False when it was already granted."""
        with self._write() as conn:
            return self._grant_roles(conn, principal_id, [role], now) == 1

    def _grant_roles(self, conn: Connection, principal_id: str, roles: Iterable[str], now: int) -> int:
        added = 0
        for role in sorted(set(roles)):
            if conn.scalar(select(t.roles.c.name).where(t.roles.c.name == role)) is None:
                raise NotFoundError(f"no role {role!r}")
            added += insert_ignoring_duplicates(
                conn,
                t.grants,
                {"principal_id": principal_id, "role": role, "created_at": now},
                ["principal_id", "role"],
            )
        return added

    def permissions_of(self, principal_id: str) -> frozenset[str]:
        """What the roles granted to a user or client add up to."""
        return self.remembered(("permissions", principal_id), lambda: self._permissions_of(principal_id))

    def _permissions_of(self, principal_id: str) -> frozenset[str]:
        if self._sqlite:  # read on every exchange: what the user holds now
            return frozenset(row[0] for row in self._sqlite_rows(SQLITE_PERMISSIONS_OF, (principal_id,)))
        with self._read() as conn:
            return frozenset(conn.scalars(_PERMISSIONS_OF, {"principal_id": principal_id}))

    def roles_of(self, principal_id: str) -> list[str]:
        with self._read() as conn:
            return sorted(conn.scalars(select(t.grants.c.role).where(t.grants.c.principal_id == principal_id)))

    def grants(self) -> list[tuple[str, str]]:
        """(principal description, role) for every grant."""
        with self._read() as conn:
            rows = list(conn.execute(select(t.grants).order_by(t.grants.c.role, t.grants.c.principal_id)))
            return [(self._describe(conn, r.principal_id), r.role) for r in rows]

    def revoke_grant(self, principal_id: str, role: str) -> bool:
        with self._write() as conn:
            result = conn.execute(
                delete(t.grants).where(t.grants.c.principal_id == principal_id, t.grants.c.role == role)
            )
            return result.rowcount == 1

    def _describe(self, conn: Connection, principal_id: str) -> str:
        name = conn.scalar(select(t.users.c.username).where(t.users.c.id == principal_id))
        if name is not None:
            return f"user {name}"
        client_id = conn.scalar(select(t.clients.c.client_id).where(t.clients.c.id == principal_id))
        return f"client {client_id}" if client_id is not None else principal_id
