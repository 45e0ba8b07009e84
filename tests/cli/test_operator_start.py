"""Issue 14, part A: the data directory and ``chit serve`` as an operator expects, driving the real
``chit`` executable in fresh temporary directories.

Only ``chit serve`` and ``chit init`` create an installation; every other command refuses in one line
when there is none. A start that fails says why in one line, prints no traceback and leaves nothing
behind. ``chit serve`` prints its URLs, writes an access log and says goodbye.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import ADMIN_PASSWORD, POSTGRES_URL, free_port

HOW = "(run chit serve or chit init, or set CHIT_DATA_DIR)"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    return {**env, **extra}


def chit(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chit", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_refused(result: subprocess.CompletedProcess[str], first_line: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines()[0] == first_line, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def postgres_reachable() -> bool:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


# commands that only read or change an installation never create one ------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["service", "list"],
        ["role", "list"],
        ["user", "disable", "alice"],
        ["api-key", "list"],
        ["audit", "tail"],
        ["audit", "verify"],
        ["keys", "rotate"],
    ],
)
def test_a_command_in_an_empty_folder_refuses_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    result = chit(tmp_path, *args)
    assert_refused(result, f"chit: no chit installation at {tmp_path / 'chit-data'} {HOW}")
    assert "password" not in result.stderr
    assert tree(tmp_path) == []


def test_chit_data_dir_names_where_it_looked(tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    assert_refused(
        chit(tmp_path, "service", "list", CHIT_DATA_DIR=str(where)), f"chit: no chit installation at {where} {HOW}"
    )
    assert_refused(
        chit(tmp_path, "service", "list", "--data-dir", "other"),
        f"chit: no chit installation at {tmp_path / 'other'} {HOW}",
    )
    assert tree(tmp_path) == []


def test_an_empty_data_directory_is_no_installation(tmp_path: Path) -> None:
    (tmp_path / "chit-data").mkdir()
    assert_refused(chit(tmp_path, "role", "list"), f"chit: no chit installation at {tmp_path / 'chit-data'} {HOW}")
    assert tree(tmp_path) == ["chit-data"]


def test_init_creates_an_installation_that_commands_then_use(tmp_path: Path) -> None:
    result = chit(tmp_path, "init", CHIT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    data = tmp_path / "chit-data"
    assert result.stderr.splitlines()[-1] == f"chit installation ready at {data}"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "chit.db").stat().st_mode) == 0o600
    listed = chit(tmp_path, "role", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    again = chit(tmp_path, "init")  # idempotent: no second admin, no password printed
    assert again.returncode == 0, again.stderr
    assert "password" not in again.stderr


def test_a_missing_sqlite_file_is_no_installation(tmp_path: Path) -> None:
    assert chit(tmp_path, "init", CHIT_ADMIN_PASSWORD=ADMIN_PASSWORD).returncode == 0
    db = tmp_path / "other.db"
    result = chit(tmp_path, "service", "list", "--database-url", f"sqlite:///{db}")
    assert_refused(result, f"chit: no chit database at {db} {HOW}")
    assert not db.exists()


# a failed start: one line, no traceback, nothing half-created --------------------------------------


def test_serve_with_a_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = chit(tmp_path, "serve", "--port", str(free_port()), "--data-dir", "file/data")
    assert_refused(result, f"chit: cannot create the data directory {tmp_path / 'file' / 'data'}: Not a directory")
    assert tree(tmp_path) == ["file"]


def test_serve_with_a_data_dir_that_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = chit(tmp_path, "serve", "--port", str(free_port()), "--data-dir", "file")
    assert_refused(result, f"chit: cannot create the data directory {tmp_path / 'file'}: not a directory")


def test_serve_with_a_data_dir_under_proc(tmp_path: Path) -> None:
    result = chit(tmp_path, "serve", "--port", str(free_port()), "--data-dir", "/proc/chit-data")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("chit: cannot create the data directory /proc/chit-data: ")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_serve_with_a_closed_postgresql_port_leaves_no_data_dir(tmp_path: Path) -> None:
    for scheme in ("postgresql", "postgres"):
        url = f"{scheme}://root@127.0.0.1:1/test"
        result = chit(tmp_path, "serve", "--port", str(free_port()), "--data-dir", "a/data", "--database-url", url)
        assert_refused(
            result,
            f"chit: cannot open the database {url}: connection failed: "
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        )
        assert tree(tmp_path) == []


def test_init_and_commands_with_a_closed_postgresql_port(tmp_path: Path) -> None:
    url = "postgresql://root@127.0.0.1:1/test"
    first = "chit: cannot open the database postgresql://root@127.0.0.1:1/test: connection failed: "
    assert_refused(
        chit(tmp_path, "init", "--database-url", url),
        first + 'connection to server at "127.0.0.1", port 1 failed: Connection refused',
    )
    assert tree(tmp_path) == []


def test_an_existing_data_dir_is_kept_when_the_start_fails(tmp_path: Path) -> None:
    (tmp_path / "chit-data").mkdir()
    result = chit(tmp_path, "serve", "--port", str(free_port()), "--database-url", "postgresql://root@127.0.0.1:1/test")
    assert result.returncode == 1
    assert tree(tmp_path) == ["chit-data"]


@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL is not running (CHIT_TEST_POSTGRES_URL)")
def test_serve_with_a_missing_postgresql_database(tmp_path: Path) -> None:
    url = "postgresql://root@127.0.0.1:5432/nosuchdb"
    result = chit(tmp_path, "serve", "--port", str(free_port()), "--database-url", url)
    assert_refused(
        result,
        f"chit: cannot open the database {url}: connection failed: "
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "nosuchdb" does not exist',
    )
    assert tree(tmp_path) == []


def test_a_postgres_scheme_url_is_accepted() -> None:
    from chit.storage.engine import create_database_engine

    engine = create_database_engine("postgres://root@127.0.0.1:5432/test")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


# chit serve: banner, access log, goodbye ------------------------------------------------------------


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    out = tmp_path / "serve.log"
    with open(out, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chit", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=clean_env(CHIT_ADMIN_PASSWORD=ADMIN_PASSWORD),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, out.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port, out
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("chit serve did not come up: " + out.read_text())


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(path: Path, pattern: str) -> str:
    deadline = time.monotonic() + 5
    while True:
        text = path.read_text()
        if re.search(pattern, text, re.MULTILINE) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def banner(port: int, data: Path) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    return [
        f"chit auth server at {url}",
        f"  discovery: {url}/.well-known/openid-configuration",
        f"  API docs:  {url}/docs",
        f"  data:      {data}",
        "press Ctrl+C to stop",
    ]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_prints_its_urls_logs_requests_and_says_goodbye(tmp_path: Path, workers: str) -> None:
    process, port, out = start(tmp_path, "--workers", workers)
    try:
        httpx.get(f"http://127.0.0.1:{port}/no-such-page?secret=s3cret", timeout=5)
        text = wait_for(out, r'"GET /no-such-page" 404')
    finally:
        code = stop(process)
    assert code == 0
    text = out.read_text()
    lines = text.splitlines()
    start_at = lines.index(banner(port, tmp_path / "chit-data")[0])
    assert lines[start_at : start_at + 5] == banner(port, tmp_path / "chit-data")
    access = [line for line in lines if "/no-such-page" in line]
    assert len(access) == 1, text
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1:\d+ "GET /no-such-page" 404 \d+(\.\d)? ms', access[0]
    ), access[0]
    assert "s3cret" not in text  # the query string is never logged
    assert lines[-1] == "chit auth server stopped"
    assert "Traceback" not in text
    assert stat.S_IMODE((tmp_path / "chit-data" / "chit.db").stat().st_mode) == 0o600


def test_serve_logs_json_lines_for_machines(tmp_path: Path) -> None:
    process, port, out = start(tmp_path, "--log-format", "json")
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        wait_for(out, r'"path": "/healthz"')
    finally:
        code = stop(process)
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    assert records, out.read_text()
    record = records[-1]
    assert set(record) == {"time", "method", "path", "status", "duration_ms", "client"}
    assert (record["method"], record["path"], record["status"]) == ("GET", "/healthz", 200)
    assert isinstance(record["duration_ms"], float | int)
    assert record["client"].startswith("127.0.0.1:")
    assert out.read_text().splitlines()[-1] == "chit auth server stopped"


def test_serve_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    result = chit(tmp_path, "serve", "--log-format", "xml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert tree(tmp_path) == []


def test_serve_on_a_port_in_use_refuses_before_creating_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = chit(tmp_path, "serve", "--port", str(port))
    assert_refused(result, f"chit: cannot listen on 127.0.0.1:{port}: address already in use")
    assert tree(tmp_path) == []
