"""Services and roles: the registry of manifests, their permissions and their roles."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from chit.errors import ConflictError, ForbiddenError, NotFoundError, RefusedError
from chit.policy.administration import TOKEN_EXCHANGE_GRANT
from chit.policy.manifest import Manifest
from chit.storage import tables as t
from chit.storage.records import (
    Registration,
    ServiceRecord,
    new_id,
)
from chit.storage.sql.connection import _join
from chit.storage.sql.grants import Grants


class Services(Grants):
    def service(self, service_id: str) -> ServiceRecord | None:
        return self.remembered(("service", service_id), lambda: self._service(service_id))

    def _service(self, service_id: str) -> ServiceRecord | None:
        if self._sqlite:  # the exchanging service, on every token exchange
            sql = (
                "SELECT id, description, manifest, on_behalf, deferred, registered_at, updated_at, public_key"
                " FROM services WHERE id = ?"
            )
            rows = self._sqlite_rows(sql, (service_id,))
            row: Any = rows[0] if rows else None
        else:
            with self._read() as conn:
                row = conn.execute(select(t.services).where(t.services.c.id == service_id)).first()
        if row is None:
            return None
        sid, description, manifest, on_behalf, deferred, registered_at, updated_at, public_key = tuple(row)
        return ServiceRecord(
            sid,
            description,
            manifest,
            frozenset(on_behalf.split()),
            frozenset(deferred.split()),
            registered_at,
            updated_at,
            public_key,
        )

    def services(self) -> list[ServiceRecord]:
        with self._read() as conn:
            ids = list(conn.scalars(select(t.services.c.id).order_by(t.services.c.id)))
        return [s for s in (self.service(i) for i in ids) if s is not None]

    def service_public_keys(self) -> list[tuple[str, str]]:
        """(service id, public key) of every service that has a key, by service id."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.services.c.id, t.services.c.public_key)
                .where(t.services.c.public_key.is_not(None))
                .order_by(t.services.c.id)
            )
            return [(r.id, r.public_key) for r in rows]

    def set_service_public_key(self, service_id: str, public_key: str, *, replacing: str | None) -> bool:
        """Store a service's public key if its key is still ``replacing`` (None: it has none); False when
        it is not (another writer came first)."""
        try:
            with self._write() as conn:
                if conn.scalar(select(t.services.c.id).where(t.services.c.id == service_id)) is None:
                    raise NotFoundError(f"no registered service {service_id!r}")
                self._check_key_free(conn, service_id, public_key)
                done = conn.execute(
                    update(t.services)
                    .where(t.services.c.id == service_id, _key_is(replacing))
                    .values(public_key=public_key)
                )
                return done.rowcount == 1
        except IntegrityError as exc:
            raise ConflictError(f"the key of service {service_id!r} is being set concurrently; retry") from exc

    def defined_permissions(self) -> dict[str, str]:
        """Every permission a registered service defines, with its description."""
        with self._read() as conn:
            return {r.name: r.description for r in conn.execute(select(t.permissions))}

    def register_service(
        self,
        manifest: Manifest,
        *,
        admin_role: tuple[str, str],
        secret_hash: str,
        now: int,
        public_key: str | None = None,
        replace_key: bool = False,
        may_change: bool = True,
    ) -> Registration:
        """Create or update a service from its manifest; refuse to drop what is still granted.

        ``admin_role`` is (role name, permission) of the service's admin role, kept across updates.
        ``public_key`` is stored in the same transaction when the service has no key yet, or, with
        ``replace_key``, whatever key it has. Without ``may_change`` a registered service is only registered
        again as it is (``Storage.register_service``).
        """
        try:
            with self._write() as conn:
                outcome = self._register(conn, manifest, admin_role, secret_hash, now, may_change)
                if public_key is None:
                    return outcome
                current = conn.scalar(select(t.services.c.public_key).where(t.services.c.id == manifest.id))
                if current == public_key or (current is not None and not replace_key):
                    return outcome
                if replace_key and not outcome.created and not may_change:
                    raise _unchangeable(manifest.id)
                self._check_key_free(conn, manifest.id, public_key)
                done = conn.execute(
                    update(t.services)
                    .where(t.services.c.id == manifest.id, _key_is(current))
                    .values(public_key=public_key)
                )
                if done.rowcount != 1:  # another writer set a key since it was read
                    raise ConflictError(f"the key of service {manifest.id!r} is being set concurrently; retry")
                return dataclasses.replace(outcome, key_set=True, replaced_key=current)
        except IntegrityError as exc:
            raise ConflictError(f"service {manifest.id!r} is being registered concurrently; retry") from exc

    def remove_service(self, service_id: str) -> str | None:
        """Remove a service with its permissions, roles and own client (and that client's grants and
        API keys); refused while anyone else holds any of them. The removed client's id, if any."""
        with self._write() as conn:
            if conn.scalar(select(t.services.c.id).where(t.services.c.id == service_id)) is None:
                raise NotFoundError(f"no registered service {service_id!r}")
            client_pk = conn.scalar(select(t.clients.c.id).where(t.clients.c.client_id == service_id))
            permissions = set(
                conn.scalars(select(t.permissions.c.name).where(t.permissions.c.service_id == service_id))
            )
            roles = set(conn.scalars(select(t.roles.c.name).where(t.roles.c.service_id == service_id)))
            own = f"client {service_id}"  # what the service's own client holds goes with it
            holders = [h for h in self._holders(conn, permissions, roles) if not h.endswith(own)]
            if holders:
                raise RefusedError("still granted, revoke first: " + "; ".join(holders))
            if client_pk is not None:
                conn.execute(delete(t.grants).where(t.grants.c.principal_id == client_pk))
                conn.execute(delete(t.api_keys).where(t.api_keys.c.owner_id == client_pk))
                conn.execute(delete(t.clients).where(t.clients.c.id == client_pk))
            conn.execute(delete(t.grants).where(t.grants.c.role.in_(roles)))
            conn.execute(delete(t.services).where(t.services.c.id == service_id))  # cascades: roles, permissions
        return client_pk

    def _register(
        self,
        conn: Connection,
        manifest: Manifest,
        admin_role: tuple[str, str],
        secret_hash: str,
        now: int,
        may_change: bool,
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
        if existing is not None and not may_change:
            raise _unchangeable(service_id)

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
                    grant_types=_join(_service_grants(manifest)),
                    scope=_join(manifest.needs),
                    disabled=False,
                    created_at=now,
                )
            )
        else:
            grants = (set(client.grant_types.split()) - {TOKEN_EXCHANGE_GRANT}) | _service_grants(manifest)
            conn.execute(
                update(t.clients)
                .where(t.clients.c.client_id == service_id)
                .values(scope=_join(manifest.needs), grant_types=_join(grants))
            )
        return Registration(created=existing is None, changed=True, client_created=client_created)

    def _check_key_free(self, conn: Connection, service_id: str, public_key: str) -> None:
        """A key names one service only: whoever trusts it must know whose blocks it signs."""
        owner = conn.scalar(select(t.services.c.id).where(t.services.c.public_key == public_key))
        if owner is not None and owner != service_id:
            raise ConflictError(f"that public key is service {owner!r}'s already; each service has its own")

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

    def create_role(self, name: str, permissions: Iterable[str], now: int, description: str = "") -> None:
        try:
            with self._write() as conn:
                if conn.scalar(select(t.roles.c.name).where(t.roles.c.name == name)):
                    raise ConflictError(f"role {name!r} already exists")
                conn.execute(insert(t.roles).values(name=name, description=description, created_at=now))
                rows = [{"role": name, "permission": p} for p in sorted(set(permissions))]
                if rows:
                    conn.execute(insert(t.role_permissions), rows)
        except IntegrityError as exc:
            raise ConflictError(f"role {name!r} already exists") from exc

    def role_exists(self, name: str) -> bool:
        with self._read() as conn:
            return conn.scalar(select(t.roles.c.name).where(t.roles.c.name == name)) is not None

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


def _key_is(public_key: str | None) -> ColumnElement[bool]:
    column = t.services.c.public_key
    return column.is_(None) if public_key is None else column == public_key


def _service_grants(manifest: Manifest) -> set[str]:
    """A service's own client acts as itself; with ``[on_behalf]`` permissions, for users too (DESIGN §4)."""
    return {"client_credentials", TOKEN_EXCHANGE_GRANT} if manifest.on_behalf else {"client_credentials"}


def _unchangeable(service_id: str) -> ForbiddenError:
    return ForbiddenError(
        f"service {service_id!r} is registered already: changing it takes chit:service.{service_id}:admin"
    )
