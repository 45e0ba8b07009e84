"""Fixtures: a real ``chit serve`` over HTTP on a fresh SQLite data directory, and PostgreSQL.

In CI (``CI=true``) a missing PostgreSQL fails the tests that need it; elsewhere they skip with a
message that says how to start it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import IN_CI, POSTGRES_URL, ChitServer, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChitServer]:
    """A fresh auth server on an empty SQLite data directory."""
    with ChitServer(tmp_path / "data", free_port()).running() as chit:
        yield chit


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


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
