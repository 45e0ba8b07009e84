"""The directory's rows remembered by a server process (``Connected.remembered``), on a SQLite file: every
change to users, clients, services, permissions, roles and grants moves the directory's version in its
own transaction, whoever writes it; a block of ``shared_reads`` answers from the rows read at the version
it found, and the next block after a change reads afresh."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chit.policy.manifest import parse_manifest
from chit.storage.engine import create_database_engine, migrate, sqlite_url
from chit.storage.sql.connection import DIRECTORY_MEMORY
from chit.storage.sql.store import Store

NOW = 1_700_000_000
DIRECTORY = ("users", "clients", "services", "permissions", "roles", "role_permissions", "grants")
MANIFEST = """\
id = "imgs"
[permissions]
"images:read" = "Read"
[roles]
viewer = ["images:read"]
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_database_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield Store(engine)
    engine.dispose()


def other_process(store: Store) -> sqlite3.Connection:
    """A connection of its own, as a CLI command or a DBA's shell has."""
    database = store.engine.url.database
    assert database is not None
    return sqlite3.connect(database, isolation_level=None)


def version(store: Store) -> int:
    with other_process(store) as db:
        return int(db.execute("SELECT version FROM directory_version").fetchone()[0])


def test_every_change_to_the_directory_moves_its_version_and_a_rolled_back_one_does_not(store: Store) -> None:
    before = version(store)
    user = store.create_user("alice", "hash", NOW)
    assert version(store) > before
    store.create_client("app", secret_hash="h", grant_types=["client_credentials"], scope=None, now=NOW)
    store.register_service(parse_manifest(MANIFEST), admin_role=("imgs:admin", "imgs:*"), secret_hash="a" * 64, now=NOW)
    store.grant(user.id, "imgs:viewer", NOW)
    with other_process(store) as db:
        for table in DIRECTORY:  # an UPDATE of every table, then a DELETE, children first
            moved = version(store)
            changed = db.execute(f"UPDATE {table} SET rowid = rowid").rowcount  # noqa: S608 (names of ours)
            assert changed > 0, table
            assert version(store) == moved + changed, table
        for table in ("grants", "role_permissions", "roles", "permissions", "services", "clients", "users"):
            moved = version(store)
            db.execute(f"DELETE FROM {table}")  # noqa: S608
            assert version(store) > moved, table
        moved = version(store)
        db.execute("BEGIN")
        db.execute("INSERT INTO roles (name, description, created_at) VALUES ('gone', '', 1)")
        db.execute("ROLLBACK")
        assert version(store) == moved
        db.execute("DELETE FROM users WHERE id = 'nobody'")  # no row changed: nothing to forget
        assert version(store) == moved


def test_a_block_answers_from_the_directory_as_it_began_and_the_next_one_sees_a_change(store: Store) -> None:
    user = store.create_user("alice", "hash", NOW)
    with store.shared_reads():
        assert store.user_by_id(user.id) == user
        with other_process(store) as db:
            db.execute("UPDATE users SET disabled = 1 WHERE id = ?", (user.id,))
        remembered = store.user_by_id(user.id)
        assert remembered is not None
        assert not remembered.disabled  # as when the block began
    fresh = store.user_by_id(user.id)  # outside a block: read every time
    assert fresh is not None
    assert fresh.disabled
    with store.shared_reads():
        seen = store.user_by_id(user.id)
        assert seen is not None
        assert seen.disabled


def test_blocks_share_what_they_read_until_the_version_moves(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    user = store.create_user("alice", "hash", NOW)
    store.create_client("app", secret_hash="h", grant_types=["client_credentials"], scope=None, now=NOW)
    reads: list[str] = []
    read_user, read_client = store._user_by_id, store._sqlite_client
    monkeypatch.setattr(store, "_user_by_id", lambda pk: reads.append("user") or read_user(pk))
    monkeypatch.setattr(store, "_sqlite_client", lambda cid, perms: reads.append("client") or read_client(cid, perms))

    async def requests() -> None:  # on an event loop, as the token endpoint runs them
        for _ in range(3):
            with store.shared_reads():
                assert store.user_by_id(user.id) == user
                assert store.client_by_client_id("app") is not None
                assert store.client_by_client_id("missing") is None

    asyncio.run(requests())
    assert reads == ["user", "client", "client"]
    store.create_role("editor", ["imgs:images:write"], NOW)  # any change to the directory
    asyncio.run(requests())
    assert reads == ["user", "client", "client"] * 2


def test_after_a_write_in_the_block_its_reads_are_fresh(store: Store) -> None:
    user = store.create_user("alice", "hash", NOW)
    store.create_role("viewer", ["imgs:images:read"], NOW)
    with store.shared_reads():
        assert store.permissions_of(user.id) == frozenset()
        store.grant(user.id, "viewer", NOW)
        assert store.permissions_of(user.id) == {"imgs:images:read"}


def test_a_flood_of_unknown_ids_is_remembered_within_bounds(store: Store) -> None:
    with store.shared_reads():
        for n in range(DIRECTORY_MEMORY + 50):
            assert store.client_by_client_id(f"unknown-{n}") is None
    assert len(store._directory_rows[1]) <= DIRECTORY_MEMORY


def test_blocks_in_many_threads_never_see_less_than_what_was_committed_before_they_began(store: Store) -> None:
    """Four threads read a user's permissions in blocks, without pause, while another connection grants her
    one more role twenty times: a block that begins after a grant committed sees it, whichever thread read
    (and remembered) the rows before; the rows of older versions never come back."""
    user = store.create_user("alice", "hash", NOW)
    for n in range(20):
        store.create_role(f"r{n}", [f"imgs:images:p{n}"], NOW)
    committed = [0]
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            before = committed[0]
            with store.shared_reads():
                seen = len(store.permissions_of(user.id))
                again = len(store.permissions_of(user.id))  # remembered, or read afresh: never less
            if seen < before or again < seen:
                problems.append(f"began after {before} grants, saw {seen} then {again}")

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with other_process(store) as db:
            for n in range(20):
                time.sleep(0.01)
                db.execute(
                    "INSERT INTO grants (principal_id, role, created_at) VALUES (?, ?, ?)", (user.id, f"r{n}", NOW)
                )
                committed[0] = n + 1
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    with store.shared_reads():
        assert len(store.permissions_of(user.id)) == 20
