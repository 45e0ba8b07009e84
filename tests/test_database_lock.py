"""A database lock held by another process never freezes the server (issue 12).

Another process takes the lock on ``<data-dir>/chit.db`` and holds it: either a writer's lock
(``BEGIN IMMEDIATE`` + a write: writers wait, WAL readers do not) or an exclusive one
(``locking_mode=EXCLUSIVE``, ``BEGIN EXCLUSIVE`` + a write: readers wait too, even to open the file).
SQLite grants the exclusive lock only while no other connection has the WAL database open, so that
case starts from a server process that has not opened the database yet. Meanwhile everything
that needs no database answers at once, and token and admin requests answer 503
``temporarily_unavailable`` with ``Retry-After`` within 2 s instead of waiting 15 s. On PostgreSQL,
a lock held by another session is bounded the same way (``lock_timeout``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    DEFERRED_DELEGATION_TYPE,
    IMAGE_STORE_MANIFEST,
    TAGGING_MANIFEST,
    TOKEN_EXCHANGE,
    ChitServer,
    ServiceClient,
    add_tagging_user,
    delegation_id,
    free_port,
    register_service,
)

FAST = 0.5  # seconds: what needs no database answers within this, however long the lock is held
TOKEN_DEADLINE = 2.0  # a token request answers 503 within this while the lock is held
CONCURRENT_DEADLINE = 2.5
DISCOVERY_PATHS = ("/.well-known/jwks.json", "/.well-known/openid-configuration", "/healthz")

# The other process: it takes the lock, says so on stdout, and holds it until its stdin closes.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
for statement in sys.argv[2:]:
    conn.execute(statement)
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
"""
A_WRITE = "UPDATE alembic_version SET version_num = version_num"
LOCKS = {
    "writer": ["BEGIN IMMEDIATE", A_WRITE],
    "exclusive": ["PRAGMA locking_mode=EXCLUSIVE", "BEGIN EXCLUSIVE", A_WRITE],
}


def restart(server: ChitServer) -> None:
    """A new server process: one that has no connection to the database open yet."""
    server.stop()
    server.start()


@contextmanager
def sqlite_locked(database: Path, statements: list[str]) -> Iterator[None]:
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database), *statements],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked", "the other process could not take the lock"
        yield
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        try:
            assert locker.wait(timeout=10) == 0
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait()


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - start


def token_request(server: ChitServer, secret: str) -> httpx.Response:
    data = {"grant_type": "client_credentials"}
    return httpx.post(server.token_url, data=data, auth=("svc", secret), timeout=30)


def assert_busy(response: httpx.Response, elapsed: float, deadline: float) -> None:
    assert response.status_code == 503, response.text
    assert elapsed < deadline, f"answered after {elapsed:.2f} s"
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"]
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["cache-control"] == "no-store"


def assert_fast_without_database(server: ChitServer, rounds: int = 3) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(rounds):
            for path in DISCOVERY_PATHS:
                response, elapsed = timed(http.get, path)
                assert response.status_code == 200, (path, response.text)
                assert elapsed < FAST, f"{path} took {elapsed:.2f} s while the database was locked"


def admin_token(server: ChitServer) -> str:
    data = {"grant_type": "password", "client_id": "chit-cli", "username": "admin", "password": ADMIN_PASSWORD}
    response = httpx.post(server.token_url, data=data, timeout=30)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_locked_sqlite_file_never_freezes_the_server(server: ChitServer, lock: str) -> None:
    secret = server.add_client("svc", "--grant", "client_credentials")["client_secret"]
    assert token_request(server, secret).status_code == 200
    admin = {"Authorization": f"Bearer {admin_token(server)}"}
    if lock == "exclusive":
        restart(server)

    with sqlite_locked(server.data_dir / "chit.db", LOCKS[lock]):
        assert_fast_without_database(server)

        response, elapsed = timed(token_request, server, secret)
        assert_busy(response, elapsed, TOKEN_DEADLINE)
        assert_fast_without_database(server, rounds=1)

        # a burst of token requests: each answers in time, and the loop stays free meanwhile
        with ThreadPoolExecutor(max_workers=8) as pool:
            burst = [pool.submit(timed, token_request, server, secret) for _ in range(8)]
            assert_fast_without_database(server, rounds=2)
            for future in burst:
                assert_busy(*future.result(), CONCURRENT_DEADLINE)

        # the admin API (sync routes in the thread pool) answers 503 too, neither hanging nor 500
        role = {"name": "made-while-locked", "permissions": ["chit:users:read"]}
        response, elapsed = timed(httpx.post, server.url + "/admin/roles", json=role, headers=admin, timeout=30)
        assert_busy(response, elapsed, CONCURRENT_DEADLINE)

    # the lock released: everything works again, and nothing broke the audit chain
    response = token_request(server, secret)
    assert response.status_code == 200, response.text
    role = {"name": "made-after-the-lock", "permissions": ["chit:users:read"]}
    assert httpx.post(server.url + "/admin/roles", json=role, headers=admin, timeout=30).status_code == 201
    roles = httpx.get(server.url + "/admin/roles", headers=admin, timeout=30).json()["roles"]
    assert {r["name"] for r in roles} >= {"made-after-the-lock"}
    assert "made-while-locked" not in {r["name"] for r in roles}  # a 503 did nothing
    server.cli_ok("audit", "verify")


def test_a_short_lock_is_waited_for(tmp_path: Path) -> None:
    """A lock released within the server's bound (``CHIT_DB_LOCK_TIMEOUT_MS``) costs a wait, not an error."""
    chit = ChitServer(tmp_path / "data", free_port(), extra_env={"CHIT_DB_LOCK_TIMEOUT_MS": "1500"})
    with chit.running():
        secret = chit.add_client("svc", "--grant", "client_credentials")["client_secret"]
        assert token_request(chit, secret).status_code == 200
        for lock, statements in sorted(LOCKS.items()):
            if lock == "exclusive":
                restart(chit)
            with ThreadPoolExecutor(max_workers=1) as pool:
                with sqlite_locked(chit.data_dir / "chit.db", statements):
                    pending = pool.submit(timed, token_request, chit, secret)
                    time.sleep(0.3)
                response, elapsed = pending.result()
            assert response.status_code == 200, (lock, response.text)
            assert 0.2 < elapsed < TOKEN_DEADLINE, (lock, elapsed)
        chit.cli_ok("audit", "verify")


def test_an_operator_command_waits_longer_than_a_request(server: ChitServer) -> None:
    """The CLI is another process with an operator's patience: it outwaits a lock a request would not."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        with sqlite_locked(server.data_dir / "chit.db", LOCKS["writer"]):
            command = pool.submit(timed, server.cli, "role", "create", "patient", "--permission", "chit:users:read")
            time.sleep(1.5)  # twice what the server would wait
            assert not command.done()
        result, elapsed = command.result()
    assert result.exit_code == 0, result.stderr
    assert elapsed > 1.4
    server.cli_ok("audit", "verify")


def test_a_postgresql_lock_held_by_another_session_is_bounded(tmp_path: Path, postgres_url: str) -> None:
    import psycopg

    chit = ChitServer(tmp_path / "data", free_port(), database_url=postgres_url)
    with chit.running():
        secret = chit.add_client("svc", "--grant", "client_credentials")["client_secret"]
        chit.add_user("carol", "carol-password")
        assert token_request(chit, secret).status_code == 200
        admin = {"Authorization": f"Bearer {admin_token(chit)}"}
        schema = postgres_url.rpartition("%3D")[2]
        with psycopg.connect(f"host=127.0.0.1 port=5432 dbname=test user=root options=-csearch_path={schema}") as other:
            # a row lock: disabling carol (an admin write) needs her row
            other.execute("SELECT id FROM users WHERE username = 'carol' FOR UPDATE")
            assert_fast_without_database(chit)
            response, elapsed = timed(httpx.post, chit.url + "/admin/users/carol/disable", headers=admin, timeout=30)
            assert_busy(response, elapsed, 3.0)
            assert token_request(chit, secret).status_code == 200  # what needs no such lock goes on
            other.rollback()
            # the audit table locked against writers: every token request has an event to append
            other.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            assert_fast_without_database(chit)
            response, elapsed = timed(token_request, chit, secret)
            assert_busy(response, elapsed, 3.0)
            other.rollback()
        assert token_request(chit, secret).status_code == 200
        response = httpx.post(chit.url + "/admin/users/carol/disable", headers=admin, timeout=30)
        assert response.status_code == 200, response.text
        chit.cli_ok("audit", "verify")


def deferred_delegation(chit: ChitServer, directory: Path, username: str) -> tuple[ServiceClient, str]:
    """The image store of a tagging installation, and its handle to act for a new user later."""
    image_store = register_service(chit, directory, "image-store", IMAGE_STORE_MANIFEST)
    register_service(chit, directory, "tagging", TAGGING_MANIFEST)
    _user, token = add_tagging_user(chit, username, f"{username}-password-1")
    return image_store, image_store.deferred_handle(token)


def redemptions(chit: ChitServer, handle: str) -> int:
    with sqlite3.connect(chit.data_dir / "chit.db") as db:
        [(count,)] = db.execute("SELECT redemptions FROM delegations WHERE id = ?", (delegation_id(handle),))
    return int(count)


def test_a_redemption_waits_out_a_short_lock_and_refuses_a_long_one(tmp_path: Path) -> None:
    """A deferred delegation's redemption is counted by its audit event, whose commit never waits on the
    event loop: a lock moves it to the audit's writer thread, bounded; a 503 counts nothing, and 20 at
    once count 20."""
    chit = ChitServer(tmp_path / "data", free_port(), extra_env={"CHIT_DB_LOCK_TIMEOUT_MS": "1500"})
    with chit.running():
        image_store, handle = deferred_delegation(chit, tmp_path, "dana")
        assert image_store.redeem(handle).status_code == 200

        with ThreadPoolExecutor(max_workers=20) as pool:
            with sqlite_locked(chit.data_dir / "chit.db", LOCKS["writer"]):
                pending = pool.submit(timed, image_store.redeem, handle)
                time.sleep(0.3)
            response, elapsed = pending.result()
            assert response.status_code == 200, response.text
            assert 0.2 < elapsed < TOKEN_DEADLINE
            assert redemptions(chit, handle) == 2

            with sqlite_locked(chit.data_dir / "chit.db", LOCKS["writer"]):
                response, elapsed = timed(image_store.redeem, handle)
                assert_busy(response, elapsed, 1.5 + TOKEN_DEADLINE)
            assert redemptions(chit, handle) == 2  # the refused one counted nothing

            answers = list(pool.map(lambda _: image_store.redeem(handle), range(20)))
        assert [a.status_code for a in answers] == [200] * 20
        assert redemptions(chit, handle) == 22
        chit.cli_ok("audit", "verify")


def test_redemptions_on_two_workers_at_once_are_never_refused(tmp_path: Path) -> None:
    """Two workers redeem at once: each one's audit commit on its event loop meets the other's lock all
    the time. It waits its turn in the audit's writer thread: never a 503, and every redemption counted."""
    chit = ChitServer(tmp_path / "data", free_port())
    with chit.running("--workers", "2"):
        image_store, handle = deferred_delegation(chit, tmp_path, "erin")
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": handle, "subject_token_type": DEFERRED_DELEGATION_TYPE}

        async def redeem_all() -> list[int]:
            async with httpx.AsyncClient(timeout=30, auth=image_store.auth) as http:

                async def redeem_some() -> list[int]:
                    return [(await http.post(chit.token_url, data=form)).status_code for _ in range(25)]

                batches = await asyncio.gather(*(redeem_some() for _ in range(64)))
            return [status for batch in batches for status in batch]

        statuses = asyncio.run(redeem_all())
        assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
        assert redemptions(chit, handle) == len(statuses)


def test_forty_redemptions_meeting_a_short_lock_all_wait_their_turn(tmp_path: Path) -> None:
    """More redemptions meet a lock at once than the threads kept for waiting out a stuck file: their
    audit events queue for the audit's writer, and all are answered once it is released.
    The bound is long (5 s) so that only running out of threads could refuse one, not a loaded machine."""
    chit = ChitServer(tmp_path / "data", free_port(), extra_env={"CHIT_DB_LOCK_TIMEOUT_MS": "5000"})
    with chit.running():
        image_store, handle = deferred_delegation(chit, tmp_path, "fay")
        with ThreadPoolExecutor(max_workers=40) as pool:
            with sqlite_locked(chit.data_dir / "chit.db", LOCKS["writer"]):
                pending = [pool.submit(image_store.redeem, handle) for _ in range(40)]
                time.sleep(0.4)
            answers = [future.result() for future in pending]
        statuses = [answer.status_code for answer in answers]
        refused = [answer.text for answer in answers if answer.status_code != 200]
        assert statuses == [200] * 40, (refused[:3], chit.log()[-3000:])
        assert redemptions(chit, handle) == 40
