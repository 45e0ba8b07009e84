"""Helpers that start the real thing: a ``chit serve`` process over HTTP, SQLite files, PostgreSQL.

In CI (``CI=true``) a missing PostgreSQL fails the tests that need it; elsewhere they skip with a
message that says how to start it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from chit.cli.main import app as cli_app

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_PASSWORD = "admin-password-for-tests"
POSTGRES_URL = os.environ.get("CHIT_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


@dataclass
class ChitServer:
    """A running ``chit serve`` process and the data directory it uses."""

    data_dir: Path
    port: int
    database_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/oauth2/token"

    def location_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def cli(self, *args: str, input: str | None = None) -> CliResult:
        """Run a ``chit`` command in-process against this server's data directory."""
        return run_cli(*args, *self.location_args(), input=input)

    def cli_ok(self, *args: str, input: str | None = None) -> CliResult:
        result = self.cli(*args, input=input)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    def add_client(self, client_id: str, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = self.cli_ok("client", "add", client_id, *args, "--json").json()
        return data

    def add_user(self, username: str, password: str, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = self.cli_ok(
            "user", "add", username, "--password-stdin", "--json", *args, input=password + "\n"
        ).json()
        return data

    def start(self, *serve_args: str) -> None:
        # a shell's CHIT_* settings must not leak into the server under test
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
        env = {**inherited, "CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD, **self.extra_env}
        cmd = [sys.executable, "-m", "chit", "serve", "--port", str(self.port), *self.location_args()]
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # a file, not a pipe: a pipe nobody reads would block the server
            self.process = subprocess.Popen([*cmd, *serve_args], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"chit serve exited with {self.process.returncode}:\n{out}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("chit serve did not come up within 30 s")

    @contextmanager
    def running(self, *serve_args: str) -> Iterator[ChitServer]:
        """The server started for the block, and stopped after it whatever happens."""
        self.start(*serve_args)
        try:
            yield self
        finally:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def run_cli(*args: str, input: str | None = None) -> CliResult:
    result = CliRunner().invoke(cli_app, list(args), input=input, env={"CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def register_services(server: ChitServer, directory: Path, services: dict[str, list[str]]) -> None:
    """``chit service register`` a manifest per service, defining the given resource:action names."""
    for service_id, permissions in services.items():
        lines = [f'id = "{service_id}"', "", "[permissions]", *(f'"{p}" = "{p} (test)"' for p in permissions)]
        manifest = directory / f"{service_id}.toml"
        manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
        server.cli_ok("service", "register", str(manifest))
