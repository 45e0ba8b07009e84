"""Clients: OAuth2 clients and service accounts; the token endpoint's lookup on SQLite's DBAPI."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from chit.errors import ConflictError
from chit.storage import tables as t
from chit.storage.records import (
    CLIENT_ID_PREFIX,
    Client,
    new_id,
)
from chit.storage.sql.connection import _join, _raise_if_busy, _split
from chit.storage.sql.grants import _PERMISSIONS_OF, SQLITE_PERMISSIONS_OF, Grants


def _client(row: Row[Any]) -> Client:
    return Client(
        id=row.id,
        client_id=row.client_id,
        secret_hash=row.secret_hash,
        public=bool(row.public),
        grant_types=frozenset(row.grant_types.split()),
        scope=_split(row.scope),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


# The statements of the token endpoint's hot path, built once: building a select costs more than running it.
_CLIENT_BY_CLIENT_ID = select(t.clients).where(t.clients.c.client_id == bindparam("client_id"))


# The same two lookups as plain SQLite statements (the columns in the order ``_sqlite_client`` reads).
_SQLITE_CLIENT = (
    "SELECT id, client_id, secret_hash, public, grant_types, scope, disabled, created_at"
    " FROM clients WHERE client_id = ?"
)


class Clients(Grants):
    def create_client(
        self,
        client_id: str,
        *,
        secret_hash: str | None,
        grant_types: Iterable[str],
        scope: Iterable[str] | None,
        now: int,
        roles: Iterable[str] = (),
    ) -> Client:
        client = Client(
            id=new_id(CLIENT_ID_PREFIX),
            client_id=client_id,
            secret_hash=secret_hash,
            public=secret_hash is None,
            grant_types=frozenset(grant_types),
            scope=None if scope is None else frozenset(scope),
            disabled=False,
            created_at=now,
        )
        try:
            with self._write() as conn:
                if conn.scalar(select(t.clients.c.id).where(t.clients.c.client_id == client_id)):
                    raise ConflictError(f"client {client_id!r} already exists")
                conn.execute(
                    insert(t.clients).values(
                        id=client.id,
                        client_id=client_id,
                        secret_hash=secret_hash,
                        public=client.public,
                        grant_types=_join(client.grant_types),
                        scope=None if client.scope is None else _join(client.scope),
                        disabled=False,
                        created_at=now,
                    )
                )
                self._grant_roles(conn, client.id, roles, now)
        except IntegrityError as exc:
            raise ConflictError(f"client {client_id!r} already exists") from exc
        return client

    def client_by_client_id(self, client_id: str, *, with_permissions: bool = False) -> Client | None:
        if self._sqlite:
            key = ("client", client_id, with_permissions)
            return self.remembered(key, lambda: self._sqlite_client(client_id, with_permissions))
        with self._read() as conn:
            row = conn.execute(_CLIENT_BY_CLIENT_ID, {"client_id": client_id}).first()
            if row is None:
                return None
            client = _client(row)
            if with_permissions:
                granted = frozenset(conn.scalars(_PERMISSIONS_OF, {"principal_id": client.id}))
                client = dataclasses.replace(client, role_permissions=granted)
        return client

    def _sqlite_client(self, client_id: str, with_permissions: bool) -> Client | None:
        """The token endpoint's lookup on the DBAPI connection: 12 µs instead of 90 through Core."""
        try:
            with self._raw_sqlite() as connection:
                cursor = connection.cursor()
                row = cursor.execute(_SQLITE_CLIENT, (client_id,)).fetchone()
                if row is None:
                    return None
                granted = None
                if with_permissions:
                    granted = frozenset(r[0] for r in cursor.execute(SQLITE_PERMISSIONS_OF, (row[0],)))
                cursor.close()
        except (DBAPIError, sqlite3.Error) as exc:
            _raise_if_busy(exc)
            raise
        pk, wire_id, secret_hash, public, grant_types, scope, disabled, created_at = row
        return Client(
            pk, wire_id, secret_hash, bool(public), frozenset(grant_types.split()), _split(scope), bool(disabled),
            created_at, granted,
        )  # fmt: skip

    def client_by_pk(self, pk: str) -> Client | None:
        with self._read() as conn:
            row = conn.execute(select(t.clients).where(t.clients.c.id == pk)).first()
        return None if row is None else _client(row)

    def clients(self) -> list[Client]:
        with self._read() as conn:
            return [_client(r) for r in conn.execute(select(t.clients).order_by(t.clients.c.client_id))]
