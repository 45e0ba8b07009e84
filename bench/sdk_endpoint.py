"""Benchmark: a FastAPI endpoint behind the chit dependency against the same endpoint without auth.

This starts, each on a free port on 127.0.0.1:

* ``chit serve`` (RS256, the default) on a fresh temporary data directory, with the service
  ``image-store`` registered and one client whose client-credentials token is the one every
  request carries;
* one uvicorn per endpoint, with the same settings as ``chit serve`` (httptools, uvloop, no access log,
  one worker), each serving this module's app (``create_app``) with that endpoint alone, so that no
  endpoint pays for matching the others' routes first (each route tried before the right one costs a
  few microseconds). The endpoints return the same small JSON body:

  - ``/open``: no authentication at all;
  - ``/chit``: ``Security(verifier, scopes=["image-store:images:read"])`` on a plain ``FastAPI()`` (no
    setup), the verified-token cache on (the default): the same token on every request, as a client
    reusing its token sends it;
  - ``/chit-yield``: the dependency as it was before issue 19 (``YieldingVerifier``: it yields, so
    that an ``AuthError`` raised in the route body comes back through it), for the difference;
  - ``/chit-nocache``: the same dependency as ``/chit`` with the cache off: a full verification per request;
  - ``/pyjwt``: a naive ``async def`` dependency around ``jwt.decode`` with the key parsed once
    (the reference from notes/performance.md);
  - ``/noop-dependency``, ``/noop-security``, ``/noop-security-yield``: an ``async def`` dependency
    that returns a constant; one that returns it through ``Security(..., scopes=[...])`` with the
    ``SecurityScopes`` and ``Request`` parameters (the chit dependency's exact shape); one that yields
    it with that shape (the shape before issue 19): what FastAPI's dependency machinery costs by
    itself, with no token work at all;

* the same app with the one documented line of setup for ``AuthError``s the route body raises by
  itself, ``app.add_exception_handler(AuthError, auth_error_handler)`` (``create_app_with_handler``):
  its rows are ``handler:/open`` and ``handler:/chit``, and their ratio column is against ``handler:/open``.

Each endpoint is checked once (200 with the token; 401 without it for the protected ones), then
driven by ``wrk -t1 -c32`` for ``--rounds`` rounds of ``--duration`` seconds, the endpoints
interleaved in every round. Requests/s count 2xx answers only; anything else is reported. The ratio
to ``/open`` is the median over rounds of each round's ratio to the ``/open`` run just before it, so
that the machine's drift between rounds cancels out. With two CPUs or more, the apps run on the last
one and wrk on the others (``sched_setaffinity``): neither migrates onto the other's core mid-round.
Every process started here is stopped at the end, also on failure or Ctrl-C.

    .venv/bin/python bench/sdk_endpoint.py --rounds 5 --duration 4    # about 4 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from benchinfo import chit_source, load_average, versions
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import SecurityScopes

from chit import Principal, Verifier
from chit.answers import bearer_token
from chit.errors import AuthError, ServiceUnavailableError
from chit.sdk import auth_error_handler, context
from chit.sdk.fastapi import http_error

HOST = "127.0.0.1"
AUDIENCE = "image-store"
PERMISSION = "image-store:images:read"
ENDPOINTS = (
    "/open",
    "/chit",
    "/chit-yield",
    "/chit-nocache",
    "/pyjwt",
    "/noop-dependency",
    "/noop-security",
    "/noop-security-yield",
    "handler:/open",
    "handler:/chit",
)
HANDLER = "handler:"  # the endpoints of the app with the exception handler
TIMES = "\u00d7"
MANIFEST = """
id = "image-store"
description = "Users' images"

[permissions]
"images:read" = "Read an image"
"""


class YieldingVerifier(Verifier):
    """The dependency as it was before issue 19: it yields, so that an ``AuthError`` raised in the route
    body comes back through it and answers like one of its own."""

    async def __call__(  # type: ignore[override]
        self, security_scopes: SecurityScopes, request: Request
    ) -> AsyncIterator[Principal]:
        scopes = security_scopes.scopes
        try:
            token = bearer_token(request.headers.getlist("authorization"))
            principal = await self.verify(token)
            principal = self.authorize(principal, scopes, method=request.method, path=request.url.path)
        except (AuthError, ServiceUnavailableError) as exc:
            raise http_error(exc, scopes) from None
        bound = context.bind(principal, token)
        try:
            yield principal
        except AuthError as exc:
            raise http_error(exc) from exc
        finally:
            context.unbind(bound)


def add_route(app: FastAPI, path: str, dependency: Any) -> None:
    """``GET path`` answering the same small body, behind ``dependency`` (None: no dependency)."""
    if dependency is None:

        async def endpoint() -> dict[str, str]:
            return {"id": "1", "owner": "usr_1"}

    else:

        async def endpoint(value: Any = dependency) -> dict[str, str]:
            return {"id": "1", "owner": "usr_1"}

    app.get(path)(endpoint)


def create_app_with_handler() -> Any:
    """``create_app`` with the line of setup for ``AuthError``s the route body raises by itself."""
    app = create_app()
    app.add_exception_handler(AuthError, auth_error_handler)
    return app


def create_app() -> Any:
    """The benchmarked service (uvicorn factory); the issuer comes from ``BENCH_ISSUER``. With ``BENCH_ENDPOINT``
    set, the app has only that route (and FastAPI's documentation routes, as any app has): every endpoint
    is measured at the same place in its router."""
    issuer = os.environ["BENCH_ISSUER"]
    verifier = Verifier(issuer, AUDIENCE)
    yielding = YieldingVerifier(issuer, AUDIENCE)
    uncached = Verifier(issuer, AUDIENCE, cache_size=0)
    jwks = httpx.get(issuer + "/.well-known/jwks.json").json()
    keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks["keys"]}

    async def pyjwt_dependency(request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
        try:
            kid = jwt.get_unverified_header(token)["kid"]
            claims: dict[str, Any] = jwt.decode(
                token, keys[kid], algorithms=["RS256"], audience=AUDIENCE, issuer=issuer
            )
        except (jwt.PyJWTError, KeyError) as exc:
            raise HTTPException(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
        if PERMISSION not in claims["scope"].split():
            raise HTTPException(403, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
        return claims

    async def noop() -> str:
        return "x"

    async def noop_security(security_scopes: SecurityScopes, request: Request) -> str:
        return "x"

    async def noop_security_yield(security_scopes: SecurityScopes, request: Request) -> AsyncIterator[str]:
        yield "x"

    dependencies: dict[str, Any] = {
        "/open": None,
        "/chit": Security(verifier, scopes=[PERMISSION]),
        "/chit-yield": Security(yielding, scopes=[PERMISSION]),
        "/chit-nocache": Security(uncached, scopes=[PERMISSION]),
        "/pyjwt": Depends(pyjwt_dependency),
        "/noop-dependency": Depends(noop),
        "/noop-security": Security(noop_security, scopes=[PERMISSION]),
        "/noop-security-yield": Security(noop_security_yield, scopes=[PERMISSION]),
    }
    only = os.environ.get("BENCH_ENDPOINT")
    app = FastAPI()
    for path, dependency in dependencies.items():
        if only is None or path == only:
            add_route(app, path, dependency)
    return app


# --- the driver -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text(errors='replace')}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text(errors='replace')}")


def on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps the child on ``cpus`` (None: wherever the scheduler puts it)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def pinning() -> tuple[set[int] | None, set[int] | None]:
    """The CPUs of the measured apps and of wrk: apart, so that neither takes the other's core mid-round."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[-1]}, set(available[:-1])


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], health_url: str, log: Path, cpus: set[int] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=on_cpus(cpus),
        )
    try:
        wait_healthy(health_url, process, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def chit_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "chit", *args], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chit {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (the single uvicorn worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str, token: str, duration: float, connections: int, pid: int, cpus: set[int] | None = None
) -> dict[str, float]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    cpu_before = process_cpu_seconds(pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, preexec_fn=on_cpus(cpus))
    cpu = process_cpu_seconds(pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}:\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": (total - bad) / seconds,
        "cpu_us": cpu / max(total, 1) * 1e6,
        "non_2xx": bad,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--endpoints",
        nargs="+",
        choices=ENDPOINTS,
        default=ENDPOINTS,
        metavar="ENDPOINT",
        help="only these (the /open of each app is always run: the ratios are to it)",
    )
    args = parser.parse_args()
    wanted = (
        set(args.endpoints)
        | {"/open"}
        | ({HANDLER + "/open"} if any(e.startswith(HANDLER) for e in args.endpoints) else set())
    )
    endpoints = [endpoint for endpoint in ENDPOINTS if endpoint in wanted]
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="chit-bench-") as tmp:
        root = Path(tmp)
        data = root / "data"
        env = {**os.environ, "CHIT_ADMIN_PASSWORD": "bench-admin-password", "CHIT_DATA_DIR": str(data)}
        server_port = free_port()
        issuer = f"http://{HOST}:{server_port}"
        serve = [sys.executable, "-m", "chit", "serve", "--port", str(server_port)]
        with started(serve, env, issuer + "/healthz", root / "serve.log"):
            manifest = root / "image-store.toml"
            manifest.write_text(MANIFEST)
            chit_cli("service", "register", str(manifest), env=env)
            created = chit_cli("client", "add", "bench", "--scope", PERMISSION, "--json", env=env)
            secret = re.search(r'"client_secret": "([^"]+)"', created).group(1)  # type: ignore[union-attr]
            response = httpx.post(
                issuer + "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("bench", secret)
            )
            response.raise_for_status()
            token = response.json()["access_token"]

            app_env = {**env, "BENCH_ISSUER": issuer}

            def uvicorn(factory: str, port: int) -> list[str]:
                return [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"sdk_endpoint:{factory}",
                    "--factory",
                    "--app-dir",
                    str(Path(__file__).resolve().parent),
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ]

            app_cpus, wrk_cpus = pinning()
            with contextlib.ExitStack() as apps:
                processes: dict[str, tuple[str, int]] = {}
                for endpoint in endpoints:
                    path = endpoint.removeprefix(HANDLER)
                    factory = "create_app_with_handler" if endpoint.startswith(HANDLER) else "create_app"
                    port = free_port()
                    log = root / f"app-{len(processes)}.log"
                    url = f"http://{HOST}:{port}{path}"
                    process = apps.enter_context(
                        started(uvicorn(factory, port), {**app_env, "BENCH_ENDPOINT": path}, url, log, app_cpus)
                    )
                    processes[endpoint] = url, process.pid

                def target(endpoint: str) -> tuple[str, int]:
                    return processes[endpoint]

                for endpoint in endpoints:
                    url, _ = target(endpoint)
                    ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
                    assert ok.status_code == 200, (endpoint, ok.status_code, ok.text)
                    if "/chit" in endpoint or "/pyjwt" in endpoint:
                        assert httpx.get(url).status_code == 401, endpoint
                for endpoint in endpoints:  # warm-up
                    url, pid = target(endpoint)
                    run_wrk(url, token, 2, args.connections, pid, wrk_cpus)
                samples: dict[str, list[dict[str, float]]] = {endpoint: [] for endpoint in endpoints}
                for _ in range(args.rounds):
                    for endpoint in endpoints:
                        url, pid = target(endpoint)
                        samples[endpoint].append(run_wrk(url, token, args.duration, args.connections, pid, wrk_cpus))

    report(samples, args, load_before, app_cpus, wrk_cpus)


def report(
    samples: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
    load_before: str,
    app_cpus: set[int] | None,
    wrk_cpus: set[int] | None,
) -> None:
    def median(path: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[path])

    def paired(path: str, baseline: str) -> float:
        """The median over rounds of the ratio to the baseline's run of the same round (minutes apart at most)."""
        return statistics.median(s["rps"] / b["rps"] for s, b in zip(samples[path], samples[baseline], strict=True))

    placed = (
        "apps pinned to CPU "
        + ",".join(map(str, sorted(app_cpus)))
        + ", wrk to CPU "
        + ",".join(map(str, sorted(wrk_cpus)))
        if app_cpus and wrk_cpus
        else "not pinned"
    )

    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    only = "" if tuple(args.endpoints) == ENDPOINTS else " --endpoints " + " ".join(args.endpoints)
    print(f"### FastAPI endpoint behind the SDK dependency ({stamp})")
    print()
    print(
        f"`python bench/sdk_endpoint.py --rounds {args.rounds} --duration {args.duration}{only}`: "
        f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds per endpoint "
        f"(median shown; {TIMES} `/open`: the median of each round's ratio to that round's `/open`), "
        f"2 s warm-up; {placed}; one uvicorn worker per endpoint, the endpoint its app's only route "
        "(httptools, uvloop, no access log; "
        "`handler:` rows: the app with `app.add_exception_handler(AuthError, auth_error_handler)`, "
        "against its own `/open`) sharing the "
        f"{os.cpu_count()} CPUs with wrk (load average {load_before} before, {load_average()} after); "
        f"RS256 token from a real `chit serve`; {versions()}; {chit_source()}."
    )
    print()
    print(
        f"| endpoint | 2xx/s (median) | each round | {TIMES} `/open` | app CPU µs per request "
        f"| + µs over `/open` | non-2xx | socket errors | p99 ms |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for path, runs in samples.items():
        own_open = HANDLER + "/open" if path.startswith(HANDLER) else "/open"  # each app against its own
        open_cpu = median(own_open, "cpu_us")
        rps, cpu = median(path, "rps"), median(path, "cpu_us")
        rounds = ", ".join(f"{s['rps']:.0f}" for s in runs)
        bad = sum(int(s["non_2xx"]) for s in runs)
        errors = sum(int(s["socket_errors"]) for s in runs)
        print(
            f"| `{path}` | {rps:,.0f} | {rounds} | {paired(path, own_open):.2f}{TIMES} | {cpu:.0f} "
            f"| {cpu - open_cpu:+.0f} | {bad} | {errors} | {median(path, 'p99_ms'):.1f} |"
        )


if __name__ == "__main__":
    main()
