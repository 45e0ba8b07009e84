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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypedDict, TypeVar, Unpack

import httpx
import pytest
from typer.testing import CliRunner

from chit.cli.main import app as cli_app

ROOT = Path(__file__).resolve().parent.parent  # the repository: README.md, examples/, pyproject.toml
CHIT = str(Path(sys.executable).with_name("chit"))  # the installed executable, for tests that run it as a process
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_PASSWORD = "admin-password-for-tests"
POSTGRES_URL = os.environ.get("CHIT_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")

T = TypeVar("T")


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
        try:
            wait_until_serving(self.process, self.url + "/healthz", "chit serve", self.log_path)
        except RuntimeError:
            self.stop()
            raise

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
        stop_process(self.process)
        self.process = None


def wait_until_serving(process: subprocess.Popen[bytes], url: str, name: str, log_path: Path) -> None:
    """Wait up to 30 s for ``url`` to answer 200; a RuntimeError with the process's log if it exits or
    does not come up."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not come up within 30 s:\n{log_path.read_text(errors='replace')}")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a process that still runs, killing it if it does not end within 10 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ServiceProcess:
    """A service's FastAPI app (``module:app`` in ``app_dir``) served by ``python -m uvicorn`` in its own
    process, configured through ``env``; stopped by ``stop``."""

    module: str
    app_dir: Path
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
        command = [sys.executable, "-m", "uvicorn", f"{self.module}:app", "--app-dir", str(self.app_dir)]
        with open(self.log_path, "ab") as log:  # a file, not a pipe: a pipe nobody reads would block the service
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**inherited, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_serving(self.process, self.url + "/openapi.json", self.module, self.log_path)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def at_once(count: int, call: Callable[[int], T]) -> list[T]:
    """``call(0)`` … ``call(count - 1)``, each in a thread of its own, released together; their results in order."""
    barrier = threading.Barrier(count)

    def released(index: int) -> T:
        barrier.wait()
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))


def run_cli(*args: str, input: str | None = None) -> CliResult:
    result = CliRunner().invoke(cli_app, list(args), input=input, env={"CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_chit(*args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    """The real ``chit`` executable as a subprocess, 120 columns wide; ``terminal`` makes rich treat its
    stdout as a terminal (``FORCE_COLOR``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_") and k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update({"COLUMNS": "120", "TERM": "xterm-256color", "CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    if terminal:
        env["FORCE_COLOR"] = "1"
    return subprocess.run([CHIT, *args], env=env, capture_output=True, text=True, timeout=60)


def register_manifest_file(chit: ChitServer, manifest: Path) -> str:
    """``chit service register`` a manifest file; the secret of the service's own client."""
    secret: str = chit.cli_ok("service", "register", str(manifest), "--json").json()["client_secret"]
    return secret


def register_manifest(chit: ChitServer, directory: Path, name: str, text: str) -> str:
    """Write manifest text to ``<directory>/<name>.toml`` and register it; the service client's secret."""
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return register_manifest_file(chit, path)


def register_services(server: ChitServer, directory: Path, services: Mapping[str, list[str]]) -> None:
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


def assert_error(response: httpx.Response, status: int, error: str, *fragments: str) -> None:
    """An OAuth2-style error answer (RFC 6749 §5.2, as the admin API answers too), never to be cached."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    for fragment in fragments:
        assert fragment in body["error_description"], body
    assert response.headers["cache-control"] == "no-store"


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

    def audit(self, event_type: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit events of a type, from ``GET /admin/audit``."""
        response = self.get("/admin/audit", params={"type": event_type, "limit": limit})
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


def as_user(chit: ChitServer, username: str, password: str) -> Api:
    return Api(chit, user_token(chit, username, password))


def user_token(chit: ChitServer, username: str, password: str) -> str:
    """A fresh access token of a user, by the password grant."""
    return access_token(login(chit, username, password))


def audit_events(chit: ChitServer, event_type: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest audit events of a type, as ``chit audit tail --json`` prints them."""
    answer = chit.cli_ok("audit", "tail", "--type", event_type, "-n", str(limit), "--json")
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


# delegation: token exchange (RFC 8693) by a registered service, now or deferred -------------------

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED_DELEGATION_TYPE = "urn:chit:token-type:deferred-delegation"

# two services where the image store may tag for a user at the tagging service, now or later
TAGGING_MANIFEST = """\
id = "tagging"

[permissions]
"tags:write" = "Add or remove tags"

[roles]
editor = ["tags:write"]
"""
IMAGE_STORE_MANIFEST = """\
id = "image-store"

[permissions]
"images:read" = "Read"

[roles]
viewer = ["images:read"]

[on_behalf]
permissions = ["tagging:tags:write"]
deferred = ["tagging:tags:write"]
"""


def add_tagging_user(chit: ChitServer, username: str, password: str, *roles: str) -> tuple[str, str]:
    """A new user for whom the image store of a ``tagging_installation`` may tag, now or later, with
    more ``roles`` if given: (their id, a fresh access token)."""
    args = [a for role in ("tagging:editor", "image-store:viewer", *roles) for a in ("--role", role)]
    user_id: str = chit.add_user(username, password, *args)["id"]
    return user_id, user_token(chit, username, password)


def delegation_id(handle: str) -> str:
    """The id of a deferred delegation (``dlg_…``) in its handle ``chit_dd_<id>.<secret>``."""
    return handle.removeprefix("chit_dd_").split(".", 1)[0]


@dataclass
class ServiceClient:
    """A client (a registered service's own, usually) at the token, introspection and revocation
    endpoints; a public client when it has no secret."""

    chit: ChitServer
    client_id: str
    secret: str | None = None

    @property
    def auth(self) -> tuple[str, str]:
        """HTTP Basic credentials of a confidential client."""
        assert self.secret is not None, f"{self.client_id} is a public client"
        return self.client_id, self.secret

    def post(self, path: str, data: Mapping[str, str]) -> httpx.Response:
        if self.secret is None:
            return httpx.post(self.chit.url + path, data={**data, "client_id": self.client_id}, timeout=30)
        return httpx.post(self.chit.url + path, data=dict(data), auth=self.auth, timeout=30)

    def exchange(self, subject_token: str | None = None, **params: str) -> httpx.Response:
        """A token-exchange request as sent on the wire; the subject token an access token unless
        ``subject_token_type`` says otherwise."""
        data = {"grant_type": TOKEN_EXCHANGE, **params}
        if subject_token is not None:
            data = {"subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE, **data}
        return self.post("/oauth2/token", data)

    def token(self, subject_token: str | None = None, **params: str) -> str:
        return access_token(self.exchange(subject_token, **params))

    def own_token(self) -> str:
        """The service account's own token (client credentials)."""
        return access_token(self.post("/oauth2/token", {"grant_type": "client_credentials"}))

    def defer(self, user_token: str, **params: str) -> httpx.Response:
        """A request for a deferred delegation of the user's token."""
        return self.exchange(user_token, requested_token_type=DEFERRED_DELEGATION_TYPE, **params)

    def deferred_handle(self, user_token: str, **params: str) -> str:
        """A deferred delegation that must be made: its handle."""
        response = self.defer(user_token, **params)
        assert response.status_code == 200, response.text
        assert response.json()["issued_token_type"] == DEFERRED_DELEGATION_TYPE
        handle: str = response.json()["access_token"]
        assert handle.startswith("chit_dd_dlg_")
        return handle

    def redeem(self, handle: str, **params: str) -> httpx.Response:
        return self.exchange(handle, subject_token_type=DEFERRED_DELEGATION_TYPE, **params)

    def redeemed_token(self, handle: str, **params: str) -> str:
        return access_token(self.redeem(handle, **params))

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.post("/oauth2/introspect", {"token": token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def revoke(self, token: str, **extra: str) -> httpx.Response:
        response = self.post("/oauth2/revoke", {"token": token, **extra})
        assert response.headers["cache-control"] == "no-store"
        return response


def register_service(chit: ChitServer, directory: Path, name: str, text: str) -> ServiceClient:
    """A service registered from manifest text (``name`` is its id); its own client."""
    return ServiceClient(chit, name, register_manifest(chit, directory, name, text))


class TaggingInstallation(NamedTuple):
    """A test module's server with ``TAGGING_MANIFEST`` and ``IMAGE_STORE_MANIFEST`` registered, and the
    two services' own clients."""

    chit: ChitServer
    image_store: ServiceClient
    tagging: ServiceClient


def tagging_installation(module_server: ModuleServers, name: str) -> TaggingInstallation:
    chit = module_server(name)
    directory = chit.data_dir.parent  # the manifests next to the data directory
    tagging = register_service(chit, directory, "tagging", TAGGING_MANIFEST)
    image_store = register_service(chit, directory, "image-store", IMAGE_STORE_MANIFEST)
    return TaggingInstallation(chit, image_store, tagging)
