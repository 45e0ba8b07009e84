"""Fixtures shared by every test: real ``chit serve`` processes over HTTP, and the databases.

- ``server``: a fresh auth server for one test; ``module_server``: starts the servers a test module
  shares (each on a fresh data directory, with its services registered) and stops them all after it.
- ``database_url``, ``engine``, ``store``: parametrized over SQLite and PostgreSQL, a fresh database
  on each; ``postgres_url``: a private PostgreSQL schema.

In CI (``CI=true``) a missing PostgreSQL fails the tests that need it; elsewhere they skip with a
message that says how to start it. The SDK's fixtures (a clock, an in-process issuer) are in
``tests/sdk/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import IN_CI, POSTGRES_URL, ChitServer, ModuleServers, free_port
from sqlalchemy import Engine

from chit.storage.engine import create_database_engine, migrate, sqlite_url
from chit.storage.sql.store import Store

# --- servers ---------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChitServer]:
    """A fresh auth server on an empty SQLite data directory."""
    with ChitServer(tmp_path / "data", free_port()).running() as chit:
        yield chit


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleServers]:
    """Start the servers a test module shares: ``module_server("name", env=..., manifests=...)``;
    the module's own setup (users, roles, grants) stays in the module's fixture."""
    servers = ModuleServers(tmp_path_factory)
    try:
        yield servers
    finally:
        servers.stop()


# --- databases -------------------------------------------------------------------------------------


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=root", connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections use a fresh, private schema (dropped afterwards)."""
    if not postgres_available():
        message = "PostgreSQL is not reachable on 127.0.0.1:5432 (start it: pg_ctlcluster 15 main start)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=root", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=root", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: a SQLite file in ``tmp_path``, a private PostgreSQL schema."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url``, not migrated; disposed of afterwards."""
    engine = create_database_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    """The SQLAlchemy store on a migrated database, on SQLite and on PostgreSQL."""
    migrate(engine)
    return Store(engine)
