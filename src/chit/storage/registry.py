"""Storage of the service registry, roles, grants, API keys, sessions and the audit log.

``RegistryStore`` extends ``Store``; every public method is one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from chit.errors import ConflictError, NotFoundError, RefusedError
from chit.policy.manifest import Manifest
from chit.storage import tables as t
from chit.storage.records import (
    ApiKeyRecord,
    AuditRecord,
    Client,
    Registration,
    ServiceRecord,
    SessionRecord,
    User,
    new_id,
)
from chit.storage.repository import Store, _client, _join, _user

GENESIS_HASH = "0" * 64
# Serialises appends to the audit hash chain across processes on PostgreSQL (SQLite's writer lock does it there).
_AUDIT_LOCK_KEY = 0x636869745F617564  # "chit_aud"


class RegistryStore(Store):
    # services ----------------------------------------------------------------------------------

    def service(self, service_id: str) -> ServiceRecord | None:
        with self._read() as conn:
            row = conn.execute(select(t.services).where(t.services.c.id == service_id)).first()
        if row is None:
            return None
        return ServiceRecord(
            row.id,
            row.description,
            row.manifest,
            frozenset(row.on_behalf.split()),
            frozenset(row.deferred.split()),
            row.registered_at,
            row.updated_at,
        )

    def services(self) -> list[ServiceRecord]:
        with self._read() as conn:
            ids = list(conn.scalars(select(t.services.c.id).order_by(t.services.c.id)))
        return [s for s in (self.service(i) for i in ids) if s is not None]

    def defined_permissions(self) -> dict[str, str]:
        """Every permission a registered service defines, with its description."""
        with self._read() as conn:
            return {r.name: r.description for r in conn.execute(select(t.permissions))}

    def register_service(
        self, manifest: Manifest, *, admin_role: tuple[str, str], secret_hash: str, now: int
    ) -> Registration:
        """Create or update a service from its manifest; refuse to drop what is still granted.

        ``admin_role`` is (role name, permission) of the service's admin role, kept across updates.
        """
        try:
            with self._write() as conn:
                return self._register(conn, manifest, admin_role, secret_hash, now)
        except IntegrityError as exc:
            raise ConflictError(f"service {manifest.id!r} is being registered concurrently; retry") from exc

    def _register(
        self, conn: Connection, manifest: Manifest, admin_role: tuple[str, str], secret_hash: str, now: int
    ) -> Registration:
        service_id, canonical, permissions, roles = (
            manifest.id,
            manifest.canonical(),
            manifest.permissions,
            manifest.roles,
        )
        existing = conn.execute(select(t.services).where(t.services.c.id == service_id)).first()
        client = conn.execute(select(t.clients).where(t.clients.c.client_id == service_id)).first()
        if existing is None and client is not None:
            raise ConflictError(f"client id {service_id!r} is taken by a client that is not this service's")
        if existing is not None and existing.manifest == canonical and client is not None:
            return Registration(created=False, changed=False, client_created=False)

        old_permissions = set(
            conn.scalars(select(t.permissions.c.name).where(t.permissions.c.service_id == service_id))
        )
        old_roles = set(conn.scalars(select(t.roles.c.name).where(t.roles.c.service_id == service_id)))
        dropped_permissions = old_permissions - set(permissions)
        dropped_roles = old_roles - set(roles) - {admin_role[0]}
        holders = self._holders(conn, dropped_permissions, dropped_roles)
        if holders:
            raise RefusedError("still granted, revoke first: " + "; ".join(holders))

        if existing is None:
            conn.execute(
                insert(t.services).values(
                    id=service_id,
                    description=manifest.description,
                    manifest=canonical,
                    on_behalf=_join(manifest.on_behalf),
                    deferred=_join(manifest.deferred),
                    registered_at=now,
                    updated_at=now,
                )
            )
        else:
            conn.execute(
                update(t.services)
                .where(t.services.c.id == service_id)
                .values(
                    description=manifest.description,
                    manifest=canonical,
                    on_behalf=_join(manifest.on_behalf),
                    deferred=_join(manifest.deferred),
                    updated_at=now,
                )
            )
        conn.execute(delete(t.permissions).where(t.permissions.c.service_id == service_id))
        if permissions:
            conn.execute(
                insert(t.permissions),
                [{"name": n, "service_id": service_id, "description": d} for n, d in sorted(permissions.items())],
            )
        if dropped_roles:
            conn.execute(delete(t.roles).where(t.roles.c.name.in_(dropped_roles)))
        for role, members in {**roles, admin_role[0]: (admin_role[1],)}.items():
            owner = conn.execute(select(t.roles.c.service_id).where(t.roles.c.name == role)).first()
            if owner is None:
                conn.execute(insert(t.roles).values(name=role, description="", created_at=now, service_id=service_id))
            elif owner.service_id != service_id:
                raise ConflictError(f"role {role!r} already exists and does not belong to {service_id!r}")
            conn.execute(delete(t.role_permissions).where(t.role_permissions.c.role == role))
            conn.execute(insert(t.role_permissions), [{"role": role, "permission": p} for p in sorted(set(members))])
        client_created = client is None
        if client is None:
            conn.execute(
                insert(t.clients).values(
                    id=new_id("cli_"),
                    client_id=service_id,
                    secret_hash=secret_hash,
                    public=False,
                    grant_types="client_credentials",
                    scope=_join(manifest.needs),
                    disabled=False,
                    created_at=now,
                )
            )
        else:
            conn.execute(
                update(t.clients).where(t.clients.c.client_id == service_id).values(scope=_join(manifest.needs))
            )
        return Registration(created=existing is None, changed=True, client_created=client_created)

    def _holders(self, conn: Connection, permissions: set[str], roles: set[str]) -> list[str]:
        """Grants that hold any of ``permissions`` or ``roles``, described for an error message."""
        found: list[str] = []
        if permissions:
            rows = conn.execute(
                select(t.role_permissions.c.permission, t.grants.c.role, t.grants.c.principal_id)
                .join(t.grants, t.grants.c.role == t.role_permissions.c.role)
                .where(t.role_permissions.c.permission.in_(permissions))
            )
            found += [
                f"{r.permission} via role {r.role} granted to {self._describe(conn, r.principal_id)}" for r in rows
            ]
            for client in conn.execute(select(t.clients.c.client_id, t.clients.c.scope)):
                for name in set((client.scope or "").split()) & permissions:
                    found.append(f"{name} in the scope of client {client.client_id}")
        if roles:
            rows = conn.execute(select(t.grants.c.role, t.grants.c.principal_id).where(t.grants.c.role.in_(roles)))
            found += [f"role {r.role} granted to {self._describe(conn, r.principal_id)}" for r in rows]
        return sorted(found)

    def _describe(self, conn: Connection, principal_id: str) -> str:
        name = conn.scalar(select(t.users.c.username).where(t.users.c.id == principal_id))
        if name is not None:
            return f"user {name}"
        client_id = conn.scalar(select(t.clients.c.client_id).where(t.clients.c.id == principal_id))
        return f"client {client_id}" if client_id is not None else principal_id

    def users(self) -> list[User]:
        with self._read() as conn:
            return [_user(r) for r in conn.execute(select(t.users).order_by(t.users.c.username_key))]

    def clients(self) -> list[Client]:
        with self._read() as conn:
            return [_client(r) for r in conn.execute(select(t.clients).order_by(t.clients.c.client_id))]

    # roles and grants --------------------------------------------------------------------------

    def role_permissions(self, role: str) -> frozenset[str]:
        with self._read() as conn:
            if conn.scalar(select(t.roles.c.name).where(t.roles.c.name == role)) is None:
                raise NotFoundError(f"no role {role!r}")
            return frozenset(
                conn.scalars(select(t.role_permissions.c.permission).where(t.role_permissions.c.role == role))
            )

    def roles(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            perms: dict[str, list[str]] = {}
            for r in conn.execute(select(t.role_permissions).order_by(t.role_permissions.c.permission)):
                perms.setdefault(r.role, []).append(r.permission)
            return [
                {
                    "name": r.name,
                    "service": r.service_id,
                    "description": r.description,
                    "permissions": perms.get(r.name, []),
                }
                for r in conn.execute(select(t.roles).order_by(t.roles.c.name))
            ]

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

    # API keys ----------------------------------------------------------------------------------

    def create_api_key(
        self,
        *,
        key_id: str,
        owner_id: str,
        secret_hash: str,
        scope: Iterable[str],
        now: int,
        expires_at: int | None,
    ) -> ApiKeyRecord:
        record = ApiKeyRecord(key_id, owner_id, secret_hash, frozenset(scope), now, expires_at, None, None)
        with self._write() as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=key_id,
                    owner_id=owner_id,
                    secret_hash=secret_hash,
                    scope=_join(record.scope),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return record

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._read() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return None if row is None else _api_key(row)

    def api_keys(self, owner_id: str | None = None) -> list[ApiKeyRecord]:
        query = select(t.api_keys).order_by(t.api_keys.c.created_at, t.api_keys.c.id)
        if owner_id is not None:
            query = query.where(t.api_keys.c.owner_id == owner_id)
        with self._read() as conn:
            return [_api_key(r) for r in conn.execute(query)]

    def revoke_api_key(self, key_id: str, now: int) -> bool:
        with self._write() as conn:
            if conn.scalar(select(t.api_keys.c.id).where(t.api_keys.c.id == key_id)) is None:
                raise NotFoundError(f"no API key {key_id!r}")
            result = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return result.rowcount == 1

    def rotate_api_key(self, key_id: str, secret_hash: str) -> None:
        with self._write() as conn:
            result = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(secret_hash=secret_hash)
            )
            if result.rowcount != 1:
                raise NotFoundError(f"no active API key {key_id!r}")

    def touch_api_key(self, key_id: str, now: int) -> None:
        with self._write() as conn:
            conn.execute(update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=now))

    # sessions (refresh-token families) ---------------------------------------------------------

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

    # audit log ---------------------------------------------------------------------------------

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


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        row.id,
        row.owner_id,
        row.secret_hash,
        frozenset(row.scope.split()),
        row.created_at,
        row.expires_at,
        row.last_used_at,
        row.revoked_at,
    )


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
