"""Engines for the two supported databases, and schema migration with Alembic.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``: readers never wait for
the writer, and a commit costs no fsync. Write transactions start with ``BEGIN IMMEDIATE`` so that
two writers queue on the lock (``busy_timeout``) instead of failing half-way with "database is locked".

How long a statement waits for a lock another session holds is bounded (SQLite ``busy_timeout``,
PostgreSQL ``lock_timeout``), then it fails with ``DatabaseBusyError``: another process (a CLI command,
a backup, a DBA's transaction) can hold a lock for as long as it likes, and a server must answer 503
rather than hang. An operator's command may wait long (the default); the server waits well under its
clients' patience, and its event loop not at all (``chit.storage.sql.connection``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from chit.errors import ConfigurationError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_FILE = "chit.db"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"


# An operator's command waits this long for a running server's writes (and a server that was not told
# otherwise: ``Store.limit_lock_waits`` bounds a server's waits far lower).
OPERATOR_LOCK_TIMEOUT_MS = 15_000
_SQLITE_LOCK_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_PG_LOCK_NOT_AVAILABLE = "55P03"


def create_database_engine(
    url: str | URL, *, lock_timeout_ms: int = OPERATOR_LOCK_TIMEOUT_MS, pool_size: int | None = None
) -> Engine:
    """An engine whose statements wait at most ``lock_timeout_ms`` for a lock another session holds.

    SQLite: ``busy_timeout`` (0: never wait). PostgreSQL: ``lock_timeout`` (at least 1 ms: its 0 means
    forever). ``pool_size``: connections kept open (then as many again on demand).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"cannot parse the database URL {url!r}") from exc
    if lock_timeout_ms < 0:
        raise ConfigurationError(f"a lock timeout cannot be negative ({lock_timeout_ms} ms)")
    if parsed.drivername.split("+")[0] == "postgres":  # as hosting platforms write it
        parsed = parsed.set(drivername=parsed.drivername.replace("postgres", "postgresql", 1))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError("SQLite needs a file: sqlite:///path/to/chit.db")
        # as many connections as threads may ask at once: a connection past the pool is reopened every time
        size = 16 if pool_size is None else pool_size
        engine = create_engine(
            parsed,
            pool_size=size,
            max_overflow=size,
            # sqlite3's own busy timeout (5 s unless told) covers the connect-time pragmas too
            connect_args={"timeout": lock_timeout_ms / 1000},
        )
        _configure_sqlite(engine, lock_timeout_ms)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        size = 10 if pool_size is None else pool_size
        try:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=size, max_overflow=2 * size)
        except NoSuchModuleError as exc:
            raise ConfigurationError(f"unsupported PostgreSQL driver in {url!r}; use postgresql+psycopg") from exc
        _configure_postgresql(engine, max(1, lock_timeout_ms))
        return engine
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql://...")


def is_lock_error(exc: BaseException) -> bool:
    """Whether a database error means only "another session holds a lock": worth a retry, not a 500."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError wraps the driver's error
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_LOCK_CODES  # extended codes: SQLITE_BUSY_SNAPSHOT and kin
        return str(orig).startswith(("database is locked", "database table is locked", "database is busy"))
    return getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    # Connecting must not read the file: until one connection succeeds, SQLAlchemy opens them one at a
    # time, so a lock would make each wait its turn. WAL mode is set once, by ``migrate`` (it persists);
    # ``synchronous`` (which reads the schema) before a connection's first write.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("chit_write", False):
            info = connection.connection.info  # lives as long as the DBAPI connection
            if "chit_synchronous" not in info:
                connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
                info["chit_synchronous"] = True
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get("chit_read", False):
            connection.exec_driver_sql("BEGIN")
        # a read runs its statements in autocommit: no BEGIN/COMMIT round for a lookup


def _configure_postgresql(engine: Engine, lock_timeout_ms: int) -> None:
    # a session setting, not the URL's ``options``: a URL may carry its own (``-csearch_path=...``)
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        dbapi_connection.autocommit = autocommit


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates '%': escape it, or URL-encoded passwords and options break migrate
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database); SQLite in WAL mode."""
    if engine.dialect.name == "sqlite":  # persistent: every later connection opens the file in WAL mode
        _create_owner_only(engine.url.database)
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
    with engine.connect() as connection:
        connection.execution_options(chit_write=True)
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def _create_owner_only(database: str | None) -> None:
    """The SQLite file (and the -wal/-shm files SQLite gives its mode) readable by its owner only."""
    if database:
        fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")
