"""Engines for the two supported databases, and schema migration with Alembic.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``: readers never wait for
the writer, and a commit costs no fsync. Write transactions start with ``BEGIN IMMEDIATE`` so that
two writers queue on the lock (``busy_timeout``) instead of failing half-way with "database is locked".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from chit.errors import ConfigurationError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_FILE = "chit.db"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"


def create_database_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"cannot parse the database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError("SQLite needs a file: sqlite:///path/to/chit.db")
        # as many connections as threads may ask at once: a connection past the pool is reopened every time
        engine = create_engine(parsed, pool_size=16, max_overflow=16)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
        except NoSuchModuleError as exc:
            raise ConfigurationError(f"unsupported PostgreSQL driver in {url!r}; use postgresql+psycopg") from exc
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql://...")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _begin)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("chit_write", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get("chit_read", False):
            connection.exec_driver_sql("BEGIN")
        # a read runs its statements in autocommit: no BEGIN/COMMIT round for a lookup


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates '%': escape it, or URL-encoded passwords and options break migrate
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    with engine.connect() as connection:
        connection.execution_options(chit_write=True)
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")
