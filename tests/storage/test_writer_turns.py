"""A process's SQLite writers take turns (``Connected._writers_turn``): a steady stream of writes from
many threads never starves one of them into ``DatabaseBusyError`` (a 503 at the token endpoint), as
SQLite's own polling wait did; a lock held by another process is still waited for within the bound,
and past it the writer is refused, not hung."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chit.errors import DatabaseBusyError
from chit.storage.engine import SQLITE_FILE, migrate, sqlite_url
from chit.storage.sql.store import Store

THREADS = 16
WRITES = 40
LOCK_WAIT_MS = 100


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    from chit.storage.engine import create_database_engine

    store = Store(create_database_engine(sqlite_url(tmp_path)))
    migrate(store.engine)
    store.limit_lock_waits(LOCK_WAIT_MS)  # as ``chit serve`` bounds a request's wait, shorter
    try:
        yield store
    finally:
        store.engine.dispose()


def test_many_threads_writing_at_once_are_never_refused(store: Store) -> None:
    refused: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(n: int) -> None:
        start.wait()
        for i in range(WRITES):
            try:
                store.revoke_access_token(f"jti-{n}-{i}", expires_at=2_000_000_000, now=1_750_000_000)
            except DatabaseBusyError as exc:
                refused.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused == []
    assert all(store.is_access_token_revoked(f"jti-{n}-{i}") for n in range(THREADS) for i in range(WRITES))


def test_a_lock_another_process_holds_past_the_bound_refuses_the_writer(store: Store, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / SQLITE_FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError):
            store.revoke_access_token("jti-blocked", expires_at=2_000_000_000, now=1_750_000_000)
        assert time.monotonic() - started < 5  # bounded: refused, not hung
    finally:
        other.rollback()
        other.close()
    assert store.revoke_access_token("jti-blocked", expires_at=2_000_000_000, now=1_750_000_000)
