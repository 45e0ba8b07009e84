"""The connection every aggregate shares: engines, transactions, bounded lock waits.

Every public method of a store is one transaction: it either happens whole or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from chit.errors import DatabaseBusyError
from chit.storage.engine import OPERATOR_LOCK_TIMEOUT_MS, create_database_engine, is_lock_error
from chit.storage.sql.turns import Turns

# the store and DBAPI connection that hot-path reads share for the duration of ``shared_reads``
_shared: ContextVar[tuple[Connected, Any] | None] = ContextVar("chit_shared_sqlite_reads", default=None)
# the store and connection of the transaction ``atomically`` holds open: its methods join it
_atomic: ContextVar[tuple[Connected, Connection] | None] = ContextVar("chit_atomic_transaction", default=None)
# the store and the rows of the directory (see ``Connected.remembered``) that ``shared_reads`` found current
_directory: ContextVar[tuple[Connected, dict[Any, Any]] | None] = ContextVar("chit_directory_rows", default=None)

# the version of the directory: the tables a token request reads and operators rarely change (migration 0009)
_DIRECTORY_VERSION = "SELECT version FROM directory_version"
DIRECTORY_MEMORY = 4096  # rows remembered per version at most: a flood of unknown client ids stays small
T = TypeVar("T")


@dataclass
class _LoopConnection:
    """An event loop's own SQLite connection (``Connected._loop_connection``)."""

    dbapi: Any
    synchronous_set: bool = False  # ``PRAGMA synchronous=NORMAL`` runs before its first write


def _split(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(text.split())


def _join(values: Iterable[str]) -> str:
    return " ".join(sorted(values))


def insert_ignoring_duplicates(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING (both dialects); the number of rows inserted (0 or 1)."""
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    # RETURNING, not rowcount: psycopg reports -1 for this statement
    return 0 if conn.execute(statement.returning(table.c[keys[0]])).first() is None else 1


def _raise_if_busy(exc: BaseException) -> None:
    """A lock another session held too long becomes ``DatabaseBusyError`` (503 and retry, not 500)."""
    if is_lock_error(exc):
        raise DatabaseBusyError() from exc


class Connected:
    """Engines and transactions; waiting for a lock another session holds is bounded: by the engine's
    timeout in a thread, and not at all on an event loop's thread (see ``_engine_here``); past it,
    ``DatabaseBusyError``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._nowait_engine: Engine | None = None  # SQLite on an event loop: busy_timeout 0, opened on first use
        self._loop_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnection] = (
            weakref.WeakKeyDictionary()
        )
        # SQLite: this process's writing threads take turns here, in the order they came. SQLite's own
        # wait is a poll that sleeps up to 100 ms between tries, so under a steady stream of writes one
        # could lose every try until its timeout (503); SQLite's wait is left to what other processes
        # (workers, the CLI) and the event loop's commits hold.
        self._writers = Turns()
        self._lock_wait_s = OPERATOR_LOCK_TIMEOUT_MS / 1000
        # the directory's rows as of a version: replaced whole when the version moves (``shared_reads``)
        self._directory_rows: tuple[int, dict[Any, Any]] = (-1, {})

    def limit_lock_waits(self, timeout_ms: int) -> None:
        """For a server: wait at most ``timeout_ms`` for another session's lock, so that a request
        answers 503 within its client's patience; the engine's default is an operator's long wait."""
        previous = self.engine
        self.engine = create_database_engine(previous.url, lock_timeout_ms=timeout_ms)
        self._lock_wait_s = timeout_ms / 1000
        previous.dispose()

    @contextmanager
    def _writers_turn(self) -> Iterator[None]:
        """A thread's turn among this process's SQLite writers (see ``__init__``), waited for at most as
        long as SQLite's own lock: a write may wait twice the bound in all. On an event loop's thread no
        turn is taken: the loop never waits, its engine tells a busy lock at once."""
        if not self._sqlite or asyncio._get_running_loop() is not None:
            yield
            return
        if not self._writers.acquire(timeout=self._lock_wait_s):
            raise DatabaseBusyError()
        try:
            yield
        finally:
            self._writers.release()

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

    def _loop_connection(self) -> _LoopConnection | None:
        """On an event loop's thread, SQLite's DBAPI connection that loop keeps for its hot-path work (from
        the engine that never waits for a lock), opened on first use; elsewhere None.

        One loop runs one statement at a time, so one connection serves it whole; keeping it saves the
        pool's checkout and return (with its rollback) on every request. Reads run in autocommit and hold
        no lock between statements."""
        if not self._sqlite:
            return None
        loop = asyncio._get_running_loop()
        if loop is None:
            return None
        kept = self._loop_connections.get(loop)
        if kept is None:
            pooled = self._engine_here().raw_connection()
            pooled.detach()  # the loop's for good: closed when the loop is gone
            kept = self._loop_connections[loop] = _LoopConnection(pooled.dbapi_connection)
        return kept

    @contextmanager
    def shared_reads(self) -> Iterator[None]:
        """The hot-path SQLite reads of the block share one connection: the loop's, else one checkout
        instead of one per read (a token exchange reads six times). Each read is still its own statement.

        The block also reads the directory's version once, and its ``remembered`` reads answer from the
        rows read at that version, in this process, by any request: see ``remembered``."""
        current = _shared.get()
        if not self._sqlite or (current is not None and current[0] is self):
            yield
            return
        kept = self._loop_connection()
        connection = kept.dbapi if kept is not None else self._engine_here().raw_connection()
        token = _shared.set((self, connection))
        try:
            rows = _directory.set((self, self._directory_as_of(connection)))
            try:
                yield
            finally:
                _directory.reset(rows)
        finally:
            _shared.reset(token)
            if kept is None:
                connection.close()  # back to the pool

    def _directory_as_of(self, connection: Any) -> dict[Any, Any]:
        """The rows remembered at the directory's current version: a new, empty set when it moved."""
        try:
            cursor = connection.cursor()
            version = cursor.execute(_DIRECTORY_VERSION).fetchone()[0]
            cursor.close()
        except (DBAPIError, sqlite3.Error) as exc:
            _raise_if_busy(exc)
            raise
        known, rows = self._directory_rows
        if known != version:
            rows = {}
            self._directory_rows = (version, rows)
        return rows

    def remembered(self, key: Any, read: Callable[[], T]) -> T:
        """``read()``, or what it returned before at the directory's current version.

        The directory is the rows a token request reads and operators rarely change: users, clients,
        services, permissions, roles and grants. Every change to them, by any process (a worker, the CLI, a DBA's
        SQL), moves its version in the same transaction (SQLite triggers, migration 0009); a block of
        ``shared_reads`` reads the version once and answers its reads from the rows remembered at that
        version, so that a token request sees the directory as it was when it began, as one read would.
        Outside such a block, after a write in it, and on PostgreSQL, ``read()`` runs every time.
        The values must be immutable: every request of the version shares them."""
        current = _directory.get()
        if current is None or current[0] is not self:
            return read()
        rows = current[1]
        try:
            value: T = rows[key]
            return value
        except KeyError:
            pass
        value = read()
        if len(rows) >= DIRECTORY_MEMORY:
            rows.clear()
        rows[key] = value
        return value

    def _forget_directory(self) -> None:
        """A write in a block of ``shared_reads``: its later reads read afresh (the write may change the
        directory, whose new version the block would not see)."""
        current = _directory.get()
        if current is not None and current[0] is self:
            _directory.set(None)

    @contextmanager
    def _raw_sqlite(self) -> Iterator[Any]:
        """SQLite's DBAPI connection: the block's shared one (``shared_reads``), the loop's, else one from
        the pool."""
        current = _shared.get()
        if current is not None and current[0] is self:
            yield current[1]
            return
        kept = self._loop_connection()
        if kept is not None:
            yield kept.dbapi
            return
        connection = self._engine_here().raw_connection()
        try:
            yield connection
        finally:
            connection.close()  # back to the pool

    def _sqlite_rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """One hot-path read on SQLite's DBAPI connection: about 10 µs, where Core takes about 90."""
        try:
            with self._raw_sqlite() as connection:
                cursor = connection.cursor()
                rows = cursor.execute(sql, params).fetchall()
                cursor.close()
        except (DBAPIError, sqlite3.Error) as exc:
            _raise_if_busy(exc)
            raise
        return list(rows)

    @contextmanager
    def _loop_transaction(self) -> Iterator[Any | None]:
        """On an event loop's thread (SQLite, outside ``atomically``), a cursor in a write transaction on
        the loop's own connection, committed at the end of the block: a third of Core's cost. The loop
        never waits for the lock: busy, ``DatabaseBusyError`` at once. Elsewhere None: write through Core."""
        kept = self._loop_connection() if self._joined() is None else None
        if kept is None:
            yield None
            return
        self._forget_directory()
        connection = kept.dbapi
        cursor = connection.cursor()
        try:
            if not kept.synchronous_set:
                cursor.execute("PRAGMA synchronous=NORMAL")  # as the engine sets it before a first write
                kept.synchronous_set = True
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.rollback()
                raise
        except sqlite3.Error as exc:
            _raise_if_busy(exc)
            raise
        finally:
            cursor.close()

    @contextmanager
    def atomically(self) -> Iterator[None]:
        """Every method of this store called in the block joins one write transaction, committed at the
        end of the block or rolled back whole: a revocation and its feed event are written together."""
        current = _atomic.get()
        if current is not None and current[0] is self:
            yield
            return
        with self._write() as conn:
            token = _atomic.set((self, conn))
            try:
                yield
            finally:
                _atomic.reset(token)

    def _joined(self) -> Connection | None:
        """The connection of the ``atomically`` block this call runs in, if any."""
        current = _atomic.get()
        return current[1] if current is not None and current[0] is self else None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        joined = self._joined()
        if joined is not None:
            yield joined
            return
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
        joined = self._joined()
        if joined is not None:
            yield joined
            return
        self._forget_directory()
        try:
            with self._writers_turn(), self._engine_here().connect() as conn:
                conn.execution_options(chit_write=True)
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            _raise_if_busy(exc)
            raise
