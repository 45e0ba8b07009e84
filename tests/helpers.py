"""Helpers that start the real thing: ``chit serve`` processes over HTTP (one, or the ones a test module
shares), the CLI in-process, SQLite files, PostgreSQL.

In CI (``CI=true``) a missing PostgreSQL fails the tests that need it; elsewhere they skip with a
message that says how to start it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import httpx
import pytest
from typer.testing import CliRunner

from chit.cli.main import app as cli_app

ROOT = Path(__file__).resolve().parent.parent  # the repository: README.md, examples/, pyproject.toml
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


class ServerOptions(TypedDict, total=False):
    """How one of a module's servers is started and what is registered on it once it runs."""

    env: Mapping[str, str]  # CHIT_* settings for the process
    serve_args: Sequence[str]  # more ``chit serve`` arguments
    port: int  # when the serve arguments must name it; a free port otherwise
    manifests: Iterable[Path | str]  # registered in order: a manifest file, or manifest text
    services: Mapping[str, list[str]]  # registered as ``register_services`` does


class ModuleServers:
    """Starts the ``chit serve`` processes of one test module; each runs on a fresh SQLite data
    directory ``<name>/data`` (``<name>/<key>/data`` when several start together). Every server it
    started is stopped when the module is done, whatever happened."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[ChitServer] = []

    def __call__(self, name: str, **options: Unpack[ServerOptions]) -> ChitServer:
        """One server, started, with its ``manifests`` and ``services`` registered."""
        return self.together(name, {"": options})[""]

    def together(self, name: str, servers: Mapping[str, ServerOptions]) -> dict[str, ChitServer]:
        """Several servers, started side by side, each with its own ``manifests`` and ``services``."""
        root = self.tmp_path_factory.mktemp(name)
        started = {
            key: ChitServer(
                root / key / "data", options.get("port") or free_port(), extra_env=dict(options.get("env", {}))
            )
            for key, options in servers.items()
        }
        self.started.extend(started.values())
        with ThreadPoolExecutor(len(started)) as pool:
            starting = [pool.submit(chit.start, *servers[key].get("serve_args", ())) for key, chit in started.items()]
            for future in starting:
                future.result()
        for key, chit in started.items():
            register_manifests(chit, root / key, servers[key])
        return started

    def stop(self) -> None:
        for chit in self.started:
            chit.stop()


def register_manifests(chit: ChitServer, directory: Path, options: ServerOptions) -> None:
    for index, manifest in enumerate(options.get("manifests", ()), start=1):
        if isinstance(manifest, str):  # the text of a manifest: written next to the data directory
            path = directory / f"manifest-{index}.toml"
            path.write_text(manifest, encoding="utf-8")
            manifest = path
        chit.cli_ok("service", "register", str(manifest))
    if "services" in options:
        register_services(chit, directory, options["services"])


# the OAuth2 and admin API calls many test modules make -------------------------------------------


def login(chit: ChitServer, username: str, password: str, client_id: str = "chit-cli", **extra: str) -> httpx.Response:
    """The password grant through a first-party client."""
    data = {"grant_type": "password", "client_id": client_id, "username": username, "password": password, **extra}
    return httpx.post(chit.token_url, data=data, timeout=30)


def refresh(chit: ChitServer, refresh_token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": refresh_token}
    return httpx.post(chit.token_url, data=data, timeout=30)


def access_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the tests look at what the server put in)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def scope(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return set(response.json()["scope"].split())


class Api:
    """The admin API as one principal sees it."""

    def __init__(self, chit: ChitServer, token: str | None) -> None:
        self.chit = chit
        self.token = token

    @property
    def subject(self) -> str:
        assert self.token is not None
        sub: str = claims_of(self.token)["sub"]
        return sub

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.request(method, self.chit.url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


def as_user(chit: ChitServer, username: str, password: str) -> Api:
    return Api(chit, access_token(login(chit, username, password)))
