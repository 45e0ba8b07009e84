"""Benchmark: what a FastAPI route behind chit's dependency costs over the same route without auth, counted in
CPU instructions, so that the machine's noise does not enter.

``sdk_endpoint.py`` measures the same question under HTTP load, in requests/s; on a shared host its rounds
spread over tens of percent, wider than a few µs per request. Here each endpoint is one FastAPI app with
that route alone, driven in process through raw ASGI calls (a GET with the same ``Authorization`` header
for every endpoint), under ``valgrind --tool=callgrind``, which counts the instructions the process
executes whatever else the machine does (``PYTHONHASHSEED=0`` keeps dict and set orders, and so the counts,
from moving between runs). Each endpoint runs twice, with ``--warmup`` requests and with ``--warmup +
--requests``; the difference divided by ``--requests`` is the instructions of one request, startup and
warm-up excluded. The HTTP server (uvicorn and httptools parse and write the request) is not counted
there; it is in the second table: ``/open``, ``/noop-security`` and ``/chit`` served by uvicorn with
``chit serve``'s settings under callgrind, from its start to its stop, while this process sends the
requests one after the other on one kept-alive connection (``--no-served`` skips it). Endpoints:

* ``/open``: no authentication;
* ``/noop-security``: FastAPI's ``Security(dependency, scopes=[...])`` around an ``async def`` that takes
  ``SecurityScopes`` and ``Request``, the chit dependency's exact shape, and returns a constant;
* ``/token-only``, ``/verify-only``, ``/no-binding``, ``/no-unbinding``: the chit dependency cut short
  after each of its steps (the bearer token read from the raw headers; the principal of a token seen
  before; the route's permissions required; the principal bound for outbound calls without ending the
  binding), to attribute its cost;
* ``/chit``: ``Security(verifier, scopes=[...])`` as shipped: the above, and the binding ended by an entry
  on FastAPI's exit stack when the request ends.

The token is a client-credentials JWT (EdDSA) of the test kit's in-process issuer, verified in the
warm-up: every timed request presents a token seen before, as a client reusing its token does.

    .venv/bin/python bench/sdk_instructions.py        # about 12 minutes (valgrind runs Python ~50x slower)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchinfo import chit_source, load_average, versions
from fastapi import FastAPI, Request, Security
from fastapi.security import SecurityScopes

from chit import Principal, Verifier
from chit.errors import AuthError, ServiceUnavailableError
from chit.sdk import context
from chit.sdk.fastapi import http_error
from chit.testing import TestIssuer

AUDIENCE = "image-store"
PERMISSION = "image-store:images:read"
TIMES = "\u00d7"
HOST = "127.0.0.1"
SERVED = ("/open", "/noop-security", "/chit")  # also measured through uvicorn, HTTP server included
ENDPOINTS = {
    "/open": "no authentication",
    "/noop-security": "FastAPI's `Security` around a do-nothing dependency of the same shape",
    "/token-only": "chit's dependency, reading the bearer token only",
    "/verify-only": "... and the principal of the token seen before",
    "/no-binding": "... and the route's permissions required",
    "/no-unbinding": "... and the principal bound for outbound calls, never unbound",
    "/chit": "chit's dependency as shipped: the binding ended on FastAPI's exit stack",
}


# Each variant repeats the shipped ``Verifier.__call__`` up to its step, word for word, instead of awaiting the
# shorter variant: that await would add a coroutine of its own to the count and charge it to the step.


class TokenOnly(Verifier):
    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> Any:
        return self.token_of(request.scope["headers"])


class VerifyOnly(Verifier):
    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> Principal:
        token = self.token_of(request.scope["headers"])
        return self.verify_cached(token) or await self.verify(token)


class NoBinding(Verifier):
    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> Principal:
        scopes = security_scopes.scopes
        scope = request.scope
        try:
            token = self.token_of(scope["headers"])
            principal = self.verify_cached(token) or await self.verify(token)
            return self.authorize(principal, scopes, method=scope["method"], path=scope["path"])
        except (AuthError, ServiceUnavailableError) as exc:
            raise http_error(exc, scopes) from None


class NoUnbinding(Verifier):
    async def __call__(self, security_scopes: SecurityScopes, request: Request) -> Principal:
        scopes = security_scopes.scopes
        scope = request.scope
        try:
            token = self.token_of(scope["headers"])
            principal = self.verify_cached(token) or await self.verify(token)
            principal = self.authorize(principal, scopes, method=scope["method"], path=scope["path"])
        except (AuthError, ServiceUnavailableError) as exc:
            raise http_error(exc, scopes) from None
        context.bind(principal, token)
        return principal


def create_app(endpoint: str, issuer: TestIssuer) -> FastAPI:
    """An app with ``endpoint`` as its only route, answering the same small body."""

    async def noop_security(security_scopes: SecurityScopes, request: Request) -> str:
        return "x"

    kinds: dict[str, type[Verifier]] = {
        "/token-only": TokenOnly,
        "/verify-only": VerifyOnly,
        "/no-binding": NoBinding,
        "/no-unbinding": NoUnbinding,
        "/chit": Verifier,
    }
    app = FastAPI()
    if endpoint == "/open":

        async def open_route() -> dict[str, str]:
            return {"id": "1", "owner": "usr_1"}

        app.get(endpoint)(open_route)
        return app
    if endpoint == "/noop-security":
        dependency: Any = noop_security
    else:
        dependency = kinds[endpoint](issuer.issuer, AUDIENCE, http_client=issuer.http_client(), clock=time.time)

    async def route(value: Any = Security(dependency, scopes=[PERMISSION])) -> dict[str, str]:
        return {"id": "1", "owner": "usr_1"}

    app.get(endpoint)(route)
    return app


def served_app() -> FastAPI:
    """The uvicorn factory of the served runs: ``BENCH_ENDPOINT``'s app; the token every request carries is
    written to ``BENCH_TOKEN_FILE`` (the issuer lives in this process)."""
    issuer = TestIssuer("https://auth.example.com", alg="EdDSA", access_token_ttl=3600)
    app = create_app(os.environ["BENCH_ENDPOINT"], issuer)
    Path(os.environ["BENCH_TOKEN_FILE"]).write_text(issuer.token("cli_bench", [PERMISSION], client_id="bench"))
    return app


async def drive(endpoint: str, count: int) -> None:
    """``count`` GET requests to ``endpoint``, each a fresh ASGI call; every answer must be 200."""
    issuer = TestIssuer("https://auth.example.com", alg="EdDSA", access_token_ttl=3600)
    token = issuer.token("cli_bench", [PERMISSION], client_id="bench")
    app = create_app(endpoint, issuer)
    headers = [(b"host", b"image-store"), (b"authorization", b"Bearer " + token.encode()), (b"accept", b"*/*")]
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    for _ in range(count):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": endpoint,
            "raw_path": endpoint.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        status = 0
        await app(scope, receive, send)
        if status != 200:
            raise SystemExit(f"{endpoint} answered {status}")


def instructions(endpoint: str, count: int) -> int:
    """The instructions a process driving ``count`` requests to ``endpoint`` executes, under callgrind."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set orders in every run: the same counts
    done = subprocess.run(
        [*command, "--drive", endpoint, "--count", str(count)], capture_output=True, text=True, check=False, env=env
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind on {endpoint} failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return int(found.group(1))


def served_instructions(endpoint: str, warmup: int, count: int) -> int:
    """The instructions of a uvicorn process (``chit serve``'s settings: httptools, uvloop, no access log) serving
    ``endpoint`` under callgrind, from its start to its stop, while this process sends it ``warmup + count``
    requests one after the other on one kept-alive connection."""
    with tempfile.TemporaryDirectory() as tmp:
        token_file, port = Path(tmp) / "token", free_port()
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "uvicorn"]
        command += ["sdk_instructions:served_app", "--factory", "--app-dir", str(Path(__file__).resolve().parent)]
        command += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        command += ["--no-access-log", "--log-level", "warning"]
        env = {**os.environ, "PYTHONHASHSEED": "0", "BENCH_ENDPOINT": endpoint, "BENCH_TOKEN_FILE": str(token_file)}
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://{HOST}:{port}{endpoint}"
            with httpx.Client(timeout=60) as client:
                deadline = time.monotonic() + 300  # valgrind starts Python slowly
                while True:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"uvicorn for {endpoint} did not come up:\n{log.read_text(errors='replace')}")
                    try:
                        headers = {"Authorization": f"Bearer {token_file.read_text()}"}
                        if client.get(url, headers=headers).status_code == 200:
                            break
                    except (httpx.TransportError, FileNotFoundError):
                        time.sleep(0.5)
                for _ in range(warmup + count - 1):
                    answer = client.get(url, headers=headers)
                    if answer.status_code != 200:
                        raise SystemExit(f"{endpoint} answered {answer.status_code}")
        finally:
            server.send_signal(signal.SIGINT)  # uvicorn stops cleanly; valgrind then prints its count
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        found = re.search(r"Collected : (\d+)", log.read_text(errors="replace"))
        if found is None:
            raise SystemExit(
                f"callgrind on uvicorn for {endpoint} printed no count:\n{log.read_text(errors='replace')}"
            )
        return int(found.group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per endpoint")
    parser.add_argument("--warmup", type=int, default=200, help="requests before (keys fetched, token cached)")
    parser.add_argument("--no-served", dest="served", action="store_false", help="skip the runs through uvicorn")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the process valgrind runs
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        asyncio.run(drive(args.drive, args.count))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    load_before = load_average()
    per_request: dict[str, float] = {}
    for endpoint in ENDPOINTS:
        print(f"{endpoint} ...", file=sys.stderr)
        short, long = instructions(endpoint, args.warmup), instructions(endpoint, args.warmup + args.requests)
        per_request[endpoint] = (long - short) / args.requests
    served: dict[str, float] = {}
    if args.served:
        for endpoint in SERVED:
            print(f"{endpoint}, served by uvicorn ...", file=sys.stderr)
            short = served_instructions(endpoint, args.warmup, 0)
            long = served_instructions(endpoint, args.warmup, args.requests)
            served[endpoint] = (long - short) / args.requests
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"### Protected endpoint, in instructions per request ({stamp})")
    print()
    print(
        f"`python {Path(__file__).relative_to(Path(__file__).parents[1])} --requests {args.requests} "
        f"--warmup {args.warmup}{'' if args.served else ' --no-served'}`: instructions per request counted by "
        f"`valgrind --tool=callgrind` (a run of "
        f"{args.warmup} requests subtracted from one of {args.warmup + args.requests}), each endpoint its "
        f"app's only route, driven in process by raw ASGI calls (no HTTP server) with a JWT seen before "
        f"(load average {load_before} before, {load_average()} after: it does not change the counts); "
        f"{versions()}; {chit_source()}."
    )
    print()
    print(f"| endpoint | what it does | instructions per request | + over `/open` | `/open` {TIMES} this |")
    print("|---|---|---:|---:|---:|")
    base = per_request["/open"]
    for endpoint, description in ENDPOINTS.items():
        count = per_request[endpoint]
        print(f"| `{endpoint}` | {description} | {count:,.0f} | +{count - base:,.0f} | {base / count:.3f}{TIMES} |")
    own = per_request["/chit"] - per_request["/noop-security"]
    framework = per_request["/noop-security"] - base
    print()
    print(
        f"FastAPI's `Security` dependency doing nothing: +{framework:,.0f} instructions per request "
        f"({framework / base:.1%} of `/open`); chit's own work on top of it: +{own:,.0f} "
        f"({own / base:.1%} of `/open`), of which ending the binding on the exit stack "
        f"+{per_request['/chit'] - per_request['/no-unbinding']:,.0f}."
    )
    if served:
        print()
        print(
            f"Served by uvicorn (`--http httptools --loop uvloop --no-access-log`, as `chit serve`), the server "
            f"process counted from start to stop, {args.requests} requests one after the other on one kept-alive "
            f"connection from this process (a run with none subtracted):"
        )
        print()
        print(f"| endpoint | instructions per request, HTTP server included | + over `/open` | `/open` {TIMES} this |")
        print("|---|---:|---:|---:|")
        base = served["/open"]
        for endpoint, count in served.items():
            print(f"| `{endpoint}` | {count:,.0f} | +{count - base:,.0f} | {base / count:.3f}{TIMES} |")


if __name__ == "__main__":
    main()
