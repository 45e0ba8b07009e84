"""The SQLAlchemy implementation of chit's storage, shared by SQLite and PostgreSQL.

Every public method is one transaction: it either happens whole or not at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from chit.errors import ConflictError, DatabaseBusyError, NotFoundError, RefusedError
from chit.policy.usernames import USERNAME_RULE, is_valid_username, username_key
from chit.storage import tables as t
from chit.storage.engine import create_database_engine, is_lock_error
from chit.storage.records import (
    CLIENT_ID_PREFIX,
    USER_ID_PREFIX,
    Client,
    RefreshRecord,
    ThrottleState,
    User,
    new_id,
)


def _split(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(text.split())


def _join(values: Iterable[str]) -> str:
    return " ".join(sorted(values))


def _user(row: Row[Any]) -> User:
    return User(row.id, row.username, row.password_hash, bool(row.disabled), row.created_at, row.revoked_before)


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


def insert_ignoring_duplicates(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING (both dialects); the number of rows inserted (0 or 1)."""
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    # RETURNING, not rowcount: psycopg reports -1 for this statement
    return 0 if conn.execute(statement.returning(table.c[keys[0]])).first() is None else 1


# The statements of the token endpoint's hot path, built once: building a select costs more than running it.
_CLIENT_BY_CLIENT_ID = select(t.clients).where(t.clients.c.client_id == bindparam("client_id"))
_USER_BY_NAME = select(t.users).where(t.users.c.username_key == bindparam("username_key"))
_PERMISSIONS_OF = (
    select(t.role_permissions.c.permission)
    .join(t.grants, t.grants.c.role == t.role_permissions.c.role)
    .where(t.grants.c.principal_id == bindparam("principal_id"))
)


# The same two lookups as plain SQLite statements (the columns in the order ``_sqlite_client`` reads).
_SQLITE_CLIENT = (
    "SELECT id, client_id, secret_hash, public, grant_types, scope, disabled, created_at"
    " FROM clients WHERE client_id = ?"
)
_SQLITE_PERMISSIONS_OF = (
    "SELECT role_permissions.permission FROM role_permissions"
    " JOIN grants ON grants.role = role_permissions.role WHERE grants.principal_id = ?"
)


def _raise_if_busy(exc: BaseException) -> None:
    """A lock another session held too long becomes ``DatabaseBusyError`` (503 and retry, not 500)."""
    if is_lock_error(exc):
        raise DatabaseBusyError() from exc


class Store:
    """Waiting for a lock another session holds is bounded: by the engine's timeout in a thread, and
    not at all on an event loop's thread (see ``_engine_here``); past it, ``DatabaseBusyError``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._nowait_engine: Engine | None = None  # SQLite on an event loop: busy_timeout 0, opened on first use

    def limit_lock_waits(self, timeout_ms: int) -> None:
        """For a server: wait at most ``timeout_ms`` for another session's lock, so that a request
        answers 503 within its client's patience; the engine's default is an operator's long wait."""
        previous = self.engine
        self.engine = create_database_engine(previous.url, lock_timeout_ms=timeout_ms)
        previous.dispose()

    def _engine_here(self) -> Engine:
        """On an event loop's thread, SQLite's engine that never waits for a lock.

        A wait there would stall every request of that loop, JWKS and health checks included, for as
        long as another process holds the lock; instead the caller gets ``DatabaseBusyError`` at once
        and can redo the work in a thread, where waiting costs only that request.
        """
        if self._sqlite and asyncio._get_running_loop() is not None:
            engine = self._nowait_engine
            if engine is None:
                engine = self._nowait_engine = create_database_engine(self.engine.url, lock_timeout_ms=0, pool_size=2)
            return engine
        return self.engine

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine_here().connect() as conn:
                conn.execution_options(chit_read=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            _raise_if_busy(exc)
            raise

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engine_here().connect() as conn:
                conn.execution_options(chit_write=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            _raise_if_busy(exc)
            raise

    # users -------------------------------------------------------------------------------------

    def create_user(self, username: str, password_hash: str, now: int, roles: Iterable[str] = ()) -> User:
        if not is_valid_username(username):  # every stored key is ASCII: a non-ASCII name matches no one
            raise RefusedError(USERNAME_RULE)
        key = username_key(username)
        user = User(new_id(USER_ID_PREFIX), username, password_hash, False, now)
        try:
            with self._write() as conn:
                if conn.scalar(select(t.users.c.id).where(t.users.c.username_key == key)):
                    raise ConflictError(f"user {username!r} already exists")
                conn.execute(
                    insert(t.users).values(
                        id=user.id,
                        username=username,
                        username_key=key,
                        password_hash=password_hash,
                        disabled=False,
                        created_at=now,
                    )
                )
                self._grant_roles(conn, user.id, roles, now)
        except IntegrityError as exc:
            raise ConflictError(f"user {username!r} already exists") from exc
        return user

    def user_by_username(self, username: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(_USER_BY_NAME, {"username_key": username_key(username)}).first()
        return None if row is None else _user(row)

    def user_by_id(self, user_id: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).first()
        return None if row is None else _user(row)

    def set_user_disabled(self, username: str, disabled: bool, now: int) -> User:
        """Disabling also revokes everything issued to the user until now: enabling revives none of it."""
        key = username_key(username)
        values: dict[str, Any] = {"disabled": disabled}
        if disabled:
            values["revoked_before"] = now + 1  # whole seconds: what was issued in this second goes too
        with self._write() as conn:
            result = conn.execute(update(t.users).where(t.users.c.username_key == key).values(**values))
            if result.rowcount != 1:
                raise NotFoundError(f"no user {username!r}")
            row = conn.execute(select(t.users).where(t.users.c.username_key == key)).one()
        return _user(row)

    # clients -----------------------------------------------------------------------------------

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
            return self._sqlite_client(client_id, with_permissions)
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
            connection = self._engine_here().raw_connection()
            try:
                cursor = connection.cursor()
                row = cursor.execute(_SQLITE_CLIENT, (client_id,)).fetchone()
                if row is None:
                    return None
                granted = None
                if with_permissions:
                    granted = frozenset(r[0] for r in cursor.execute(_SQLITE_PERMISSIONS_OF, (row[0],)))
                cursor.close()
            finally:
                connection.close()  # back to the pool
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

    # roles and grants --------------------------------------------------------------------------

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
        with self._read() as conn:
            return frozenset(conn.scalars(_PERMISSIONS_OF, {"principal_id": principal_id}))

    # refresh tokens (RFC 6749 §6) --------------------------------------------------------------

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

    def revoked_families(self, family_ids: Iterable[str]) -> frozenset[str]:
        ids = list(family_ids)
        if not ids:
            return frozenset()
        fam = t.refresh_families
        with self._read() as conn:
            return frozenset(conn.scalars(select(fam.c.id).where(fam.c.id.in_(ids), fam.c.revoked_at.is_not(None))))

    # revoked access tokens (RFC 7009) ----------------------------------------------------------

    def revoke_access_token(self, jti: str, *, expires_at: int, now: int) -> None:
        with self._write() as conn:
            insert_ignoring_duplicates(
                conn, t.revoked_tokens, {"jti": jti, "expires_at": expires_at, "revoked_at": now}, ["jti"]
            )
            conn.execute(delete(t.revoked_tokens).where(t.revoked_tokens.c.expires_at < now - 3600))

    def is_access_token_revoked(self, jti: str) -> bool:
        with self._read() as conn:
            return conn.scalar(select(t.revoked_tokens.c.jti).where(t.revoked_tokens.c.jti == jti)) is not None

    # brute-force throttle ----------------------------------------------------------------------

    def throttle_states(self, keys: Iterable[str]) -> dict[str, ThrottleState]:
        keys = list(keys)
        with self._read() as conn:
            rows = conn.execute(select(t.login_throttle).where(t.login_throttle.c.key.in_(keys)))
            return {
                r.key: ThrottleState(r.key, r.failures, r.window_started_at, r.lock_level, r.locked_until) for r in rows
            }

    def update_throttle(
        self,
        keys: Iterable[str],
        step: Callable[[dict[str, ThrottleState | None]], dict[str, ThrottleState | None]],
    ) -> dict[str, ThrottleState | None]:
        """Read, decide and write the throttle state of ``keys`` in one write transaction.

        Nothing can change these keys in between, in any process: SQLite's ``BEGIN IMMEDIATE`` holds
        the whole database; PostgreSQL locks the rows (``SELECT ... FOR UPDATE``, in key order so that
        two of these transactions never wait on each other) after an insert-if-missing, so that two
        first attempts at once cannot both see "nothing counted". ``step`` gets every key's state,
        None when nothing is counted, and returns the new states: None clears a key, a key it leaves
        out keeps its state. An exception raised by ``step`` rolls the whole transaction back.
        Returns what ``step`` returned. Few statements: the lock is held by every login at once.
        """
        tl = t.login_throttle
        ordered = sorted(set(keys))
        with self._write() as conn:
            postgresql = conn.dialect.name == "postgresql"
            dialect_insert = postgresql_insert if postgresql else sqlite_insert
            if postgresql:  # a row lock cannot hold a row that does not exist yet: create it first
                fresh = {"failures": 0, "window_started_at": 0, "lock_level": 0, "locked_until": 0}
                conn.execute(dialect_insert(tl).values([{"key": k, **fresh} for k in ordered]).on_conflict_do_nothing())
            rows = conn.execute(select(tl).where(tl.c.key.in_(ordered)).order_by(tl.c.key).with_for_update()).all()
            present = {r.key for r in rows}
            states: dict[str, ThrottleState | None] = dict.fromkeys(ordered)
            for r in rows:
                if r.failures or r.lock_level:
                    states[r.key] = ThrottleState(r.key, r.failures, r.window_started_at, r.lock_level, r.locked_until)
            changes = step(dict(states))
            final = {key: changes.get(key, states[key]) for key in ordered}
            cleared = [key for key, after in final.items() if after is None and key in present]
            written = [
                {
                    "key": key,
                    "failures": after.failures,
                    "window_started_at": after.window_started_at,
                    "lock_level": after.lock_level,
                    "locked_until": after.locked_until,
                }
                for key, after in final.items()
                if after is not None and after != states[key]
            ]
            if cleared:
                conn.execute(delete(tl).where(tl.c.key.in_(cleared)))
            if written:
                upsert = dialect_insert(tl).values(written)
                columns = ("failures", "window_started_at", "lock_level", "locked_until")
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[tl.c.key], set_={c: upsert.excluded[c] for c in columns}
                    )
                )
        return changes

    def record_failure(
        self, keys: Iterable[str], step: Callable[[ThrottleState | None], ThrottleState]
    ) -> dict[str, ThrottleState]:
        """Apply ``step(previous_state_or_None) -> new_state`` to each key in one write transaction."""
        keys = list(keys)
        changes = self.update_throttle(keys, lambda states: {key: step(states[key]) for key in keys})
        return {key: state for key, state in changes.items() if state is not None}

    def clear_throttle(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        with self._write() as conn:
            conn.execute(delete(t.login_throttle).where(t.login_throttle.c.key.in_(keys)))
