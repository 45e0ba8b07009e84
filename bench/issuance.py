"""Benchmark: client_credentials token issuance under wrk on loopback, against a same-run baseline.

For each worker count (1 and 2 by default) this starts, each on a free port on 127.0.0.1:

* ``chit serve --workers N --signing-alg ALG`` on a fresh temporary data directory, one per algorithm
  (RS256 and EdDSA by default), with a service registered by ``chit service register`` and one
  client holding its permission, created by ``chit client add ... --json``;
* the baseline (``baseline_app.py``): a bare FastAPI app on uvicorn with the same settings as
  ``chit serve`` (httptools, uvloop, no access log, N workers) whose ``/token`` parses the form and
  signs an EdDSA JWT with PyJWT, storing nothing, and whose ``/empty`` does no work at all.

With ``--peer``, the peer the speed bar is defined against is measured in the same run: oidc-provider
(``peers/oidc-provider/server.mjs``) in one Node process, issuing EdDSA JWT access tokens for the
client_credentials grant and storing nothing. It is installed with ``npm ci`` when its
``node_modules`` is missing, started once for the whole run, and measured in every worker group
beside chit; each table then ends with chit EdDSA's ratio to it.

After the servers stop, this process times signing alone, with the keys chit generates (RSA-2048 for
RS256, Ed25519 for EdDSA) through PyJWT, on a signing input of a chit access token's size: the least
any server can spend per RS256 token is its EdDSA CPU per token plus the difference. Each table ends
with that floor for the RS256 ÷ EdDSA ratio.

Each target is checked once (a 200 with a token of the right algorithm), warmed up, then driven by
``wrk`` (``token_post.lua``) for ``--rounds`` rounds of ``--duration`` seconds, the targets
interleaved in every round so that the machine's drift hits all of them alike. Tokens/s counts only
2xx answers; non-2xx answers and socket errors are reported beside it. Every process started here is
stopped at the end, also on failure or Ctrl-C.

    /work/venv/bin/python bench/issuance.py            # about 4 minutes
    /work/venv/bin/python bench/issuance.py --peer --algs EdDSA
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import jwt
from benchinfo import chit_source, load_average, versions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "token_post.lua"
PEER_DIR = BENCH_DIR / "peers" / "oidc-provider"
PEER_SCOPE = "images:read"  # the scope the peer's resource server offers (its default resource)
PEER_BAR = 1.5  # chit aims at 1.5x the fastest peer's tokens/s, same signing algorithm
HOST = "127.0.0.1"  # every server and every load loop stays on loopback
START_TIMEOUT = 60.0
CLIENT_SCOPE = "image-store:images:read"
TIMES = "\u00d7"  # the multiplication sign, in ratios
FORM_BODY = "grant_type=client_credentials"
SIGNING_INPUT = b"e" * 512  # about the base64url header and claims of a chit client-credentials token
# The service whose permission the benchmark client holds: permissions must name a registered service.
MANIFEST = """\
id = "image-store"
description = "Images (benchmark)"

[permissions]
"images:read" = "Read an image"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process started here, in its own process group so that its workers stop with it."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    health_path: str = "/healthz"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {self.health_path} within {START_TIMEOUT:.0f} s:\n{self.log()}")

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid  # started with start_new_session: its own process group

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # workers left behind by a crashed supervisor


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes in a process group (a server and its workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """One URL to load, with the request it expects to succeed."""

    label: str
    url: str
    pgid: int
    authorization: str = ""
    expected_alg: str | None = None  # check the token's alg; None for the endpoint that does nothing
    body: str = FORM_BODY
    is_peer: bool = False
    runs: list[dict[str, float]] = field(default_factory=list)


def run_cli(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} exited with {done.returncode}: {done.stderr.strip()}")
    return done


def basic_authorization(client_id: str, secret: str) -> str:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def check_target(target: Target) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if target.authorization:
        headers["Authorization"] = target.authorization
    response = httpx.post(target.url, content=target.body, headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"{target.label}: {response.status_code} {response.text[:300]}")
    if target.expected_alg is not None:
        alg = jwt.get_unverified_header(response.json()["access_token"])["alg"]
        if alg != target.expected_alg:
            raise RuntimeError(f"{target.label}: token signed with {alg}, expected {target.expected_alg}")


def run_wrk(target: Target, args: argparse.Namespace, duration: float) -> dict[str, float]:
    assert target.url.startswith(f"http://{HOST}:")
    env = {**os.environ, "BENCH_BODY": target.body, "BENCH_AUTHORIZATION": target.authorization}
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        target.url,
    ]
    timeout = duration + 60
    cpu_before = group_cpu_seconds(target.pgid)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    cpu = group_cpu_seconds(target.pgid) - cpu_before
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed on {target.label}:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    ok = raw["requests"] - raw["status"]
    return {
        "ok_per_s": ok / seconds,
        "cpu_us_per_ok": cpu / ok * 1e6 if ok else float("nan"),
        "requests": raw["requests"],
        "non_2xx": raw["status"],
        "socket_errors": socket_errors,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def peer_version() -> str:
    installed = PEER_DIR / "node_modules" / "oidc-provider" / "package.json"
    return str(json.loads(installed.read_text())["version"])


def node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or "unknown"


def install_peer() -> None:
    """Install the peer's pinned dependencies when its node_modules is missing."""
    if (PEER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    ci = (PEER_DIR / "package-lock.json").exists()
    command = ["npm", "ci" if ci else "install", "--no-audit", "--no-fund"]
    print(f"installing the peer: {' '.join(command)} in {PEER_DIR}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=PEER_DIR, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = sys.executable
        self.servers: list[Server] = []
        self.peer: Server | None = None  # started once per run, stopped by close()
        self.peer_authorization = ""
        self.tmp = Path(tempfile.mkdtemp(prefix="chit-bench-issuance-"))
        self.baseline_key = self.tmp / "baseline-ed25519.pem"
        self.baseline_key.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        if self.peer is not None:
            self.peer.stop()
            self.peer = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self, server: Server) -> Server:
        self.servers.append(server)
        server.start()
        return server

    def start_baseline(self, workers: int) -> Server:
        port = free_port()
        command = [
            self.python,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--no-server-header",
            "--log-level",
            "warning",
        ]
        env = {**os.environ, "BENCH_BASELINE_KEY": str(self.baseline_key)}
        log = self.tmp / f"baseline-w{workers}.log"
        return self._start(Server(f"baseline ({workers} workers)", command, port, env, log))

    def start_peer(self) -> None:
        port = free_port()
        client_id, secret = "bench", secrets.token_urlsafe(24)
        command = ["node", str(PEER_DIR / "server.mjs"), str(port)]
        env = {
            **os.environ,
            "NODE_ENV": "production",
            "PEER_CLIENT_ID": client_id,
            "PEER_CLIENT_SECRET": secret,
            "PEER_SCOPE": PEER_SCOPE,
        }
        log = self.tmp / "peer-oidc-provider.log"
        # Its own discovery document answers once it listens: oidc-provider has no /healthz.
        self.peer = Server("oidc-provider", command, port, env, log, "/.well-known/openid-configuration")
        self.peer.start()
        self.peer_authorization = basic_authorization(client_id, secret)

    def start_chit(self, workers: int, alg: str) -> tuple[Server, str]:
        data_dir = self.tmp / f"chit-{alg}-w{workers}"
        port = free_port()
        chit = [self.python, "-m", "chit"]
        command = [*chit, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
        command += ["--signing-alg", alg, "--data-dir", str(data_dir)]
        env = {**os.environ, "CHIT_ADMIN_PASSWORD": secrets.token_urlsafe(16)}
        log = self.tmp / f"chit-{alg}-w{workers}.log"
        server = self._start(Server(f"chit {alg} ({workers} workers)", command, port, env, log))
        return server, register_bench_client(chit, data_dir, env, self.tmp)

    def measure(self, workers: int) -> list[Target]:
        baseline = self.start_baseline(workers)
        targets = [
            Target("baseline: no work (`POST /empty`)", baseline.url + "/empty", baseline.pgid),
            Target(
                "baseline: parse form + PyJWT EdDSA sign",
                baseline.url + "/token",
                baseline.pgid,
                expected_alg="EdDSA",
            ),
        ]
        for alg in self.args.algs:
            server, authorization = self.start_chit(workers, alg)
            targets.append(Target(f"chit {alg}", server.url + "/oauth2/token", server.pgid, authorization, alg))
        if self.peer is not None:
            targets.append(
                Target(
                    f"peer: oidc-provider {peer_version()} (Node, 1 process, EdDSA JWT, stores nothing)",
                    self.peer.url + "/token",
                    self.peer.pgid,
                    self.peer_authorization,
                    "EdDSA",
                    body=f"{FORM_BODY}&scope={quote_plus(PEER_SCOPE)}",
                    is_peer=True,
                )
            )
        for target in targets:
            check_target(target)
            run_wrk(target, self.args, self.args.warmup)
        for round_no in range(self.args.rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                result = run_wrk(target, self.args, self.args.duration)
                target.runs.append(result)
                print(
                    f"  workers={workers} round {round_no + 1}: {target.label}: "
                    f"{result['ok_per_s']:.0f}/s, non-2xx {result['non_2xx']:.0f}, "
                    f"socket errors {result['socket_errors']:.0f}",
                    file=sys.stderr,
                    flush=True,
                )
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        return targets


def signing_costs(rounds: int = 5, seconds: float = 0.4) -> dict[str, float]:
    """CPU µs per signature of ``SIGNING_INPUT`` in this process, by algorithm: PyJWT's RS256 with an RSA-2048
    key and its EdDSA with an Ed25519 key (the keys ``chit keys`` generates), the median over interleaved
    rounds of about ``seconds`` each."""
    signers = {
        "RS256": (RSAAlgorithm(RSAAlgorithm.SHA256), rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "EdDSA": (OKPAlgorithm(), ed25519.Ed25519PrivateKey.generate()),
    }
    samples: dict[str, list[float]] = {alg: [] for alg in signers}
    for _ in range(rounds):
        for alg, (algorithm, key) in signers.items():
            count, started = 0, time.process_time()
            while (spent := time.process_time() - started) < seconds:
                for _ in range(20):
                    algorithm.sign(SIGNING_INPUT, key)
                count += 20
            samples[alg].append(spent / count * 1e6)
    return {alg: statistics.median(values) for alg, values in samples.items()}


def rs256_floor(targets: list[Target], signing: dict[str, float]) -> str | None:
    """The line on the least RS256 ÷ EdDSA ratio signing alone allows, when both chit rows ran."""
    ed = next((t for t in targets if t.label == "chit EdDSA"), None)
    rs = next((t for t in targets if t.label == "chit RS256"), None)
    if ed is None or rs is None or not signing:
        return None
    ed_cpu, rs_cpu = median(ed, "cpu_us_per_ok"), median(rs, "cpu_us_per_ok")
    extra = signing["RS256"] - signing["EdDSA"]
    floor = (ed_cpu + extra) / ed_cpu
    return (
        f"RS256 ÷ EdDSA, CPU per token: {rs_cpu:,.0f} / {ed_cpu:,.0f} µs = **{rs_cpu / ed_cpu:.2f}{TIMES}**; "
        f"signing alone costs {signing['RS256']:,.0f} µs (RS256) against {signing['EdDSA']:,.0f} µs (EdDSA) per "
        f"token, so a token of chit EdDSA's cost signed RS256 costs at least {ed_cpu + extra:,.0f} µs: "
        f"floor **{floor:.2f}{TIMES}**; 1.5{TIMES} would take an EdDSA token of at least {2 * extra:,.0f} µs."
    )


def median(target: Target, key: str) -> float:
    return statistics.median(run[key] for run in target.runs)


def table(workers: int, targets: list[Target], signing: dict[str, float]) -> list[str]:
    base = median(targets[1], "ok_per_s")
    base_cpu = median(targets[1], "cpu_us_per_ok")
    lines = [
        f"#### {workers} worker{'s' if workers > 1 else ''}",
        "",
        f"| server | 2xx/s (median) | each round | {TIMES} baseline | server CPU µs per 2xx "
        f"| {TIMES} baseline CPU | non-2xx | socket errors | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        rate = median(target, "ok_per_s")
        rounds = ", ".join(f"{run['ok_per_s']:.0f}" for run in target.runs)
        non_2xx = sum(run["non_2xx"] for run in target.runs)
        errors = sum(run["socket_errors"] for run in target.runs)
        cpu = median(target, "cpu_us_per_ok")
        lines.append(
            f"| {target.label} | {rate:,.0f} | {rounds} | {rate / base:.2f}{TIMES} | {cpu:,.0f} "
            f"| {cpu / base_cpu:.2f}{TIMES} | {non_2xx:.0f} | {errors:.0f} "
            f"| {median(target, 'p50_ms'):.1f} | {median(target, 'p99_ms'):.1f} |"
        )
    peer = next((t for t in targets if t.is_peer), None)
    if peer is not None:
        peer_rate = median(peer, "ok_per_s")
        peer_cpu = median(peer, "cpu_us_per_ok")
        lines.append("")
        for target in targets:
            if target.label != "chit EdDSA":
                continue
            rate = median(target, "ok_per_s")
            verdict = "met" if rate >= PEER_BAR * peer_rate else "not met"
            lines.append(
                f"{TIMES} peer ({workers} chit worker{'s' if workers > 1 else ''} against one Node process): "
                f"{target.label} {rate:,.0f} / {peer_rate:,.0f} tokens/s = **{rate / peer_rate:.2f}{TIMES}** "
                f"(bar {PEER_BAR:g}{TIMES}: {verdict}); CPU per token "
                f"{median(target, 'cpu_us_per_ok'):,.0f} / {peer_cpu:,.0f} µs = "
                f"{median(target, 'cpu_us_per_ok') / peer_cpu:.2f}{TIMES}."
            )
    floor = rs256_floor(targets, signing)
    if floor is not None:
        lines += ["", floor]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--algs", nargs="+", default=["RS256", "EdDSA"], choices=["RS256", "ES256", "EdDSA"])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per target")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per target, interleaved")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also measure oidc-provider (peers/oidc-provider, one Node process, EdDSA JWT) in the same run",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60 or not 0 < args.warmup <= 30 or not 1 <= args.rounds <= 10:
        parser.error("keep --duration within 1-60 s, --warmup within 0-30 s and --rounds within 1-10")
    if not all(1 <= w <= 8 for w in args.workers):
        parser.error("--workers takes counts from 1 to 8")
    return args


def register_bench_client(chit: list[str], data_dir: Path, env: dict[str, str], tmp: Path) -> str:
    """Register ``MANIFEST``'s service and add the ``bench`` client with ``CLIENT_SCOPE`` to the data
    directory of a running ``chit serve``; the client's Basic authorization."""
    location = ["--data-dir", str(data_dir)]
    manifest = tmp / "image-store.toml"
    manifest.write_text(MANIFEST)
    run_cli([*chit, "service", "register", str(manifest), "--json", *location], env)
    added = run_cli([*chit, "client", "add", "bench", "--scope", CLIENT_SCOPE, "--json", *location], env)
    client = json.loads(added.stdout)
    return basic_authorization(client["client_id"], client["client_secret"])


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    def _raise(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if args.peer and (shutil.which("node") is None or shutil.which("npm") is None):
        print("--peer needs Node.js and npm on the PATH", file=sys.stderr)
        return 2
    targets_per_group = 2 + len(args.algs) + (1 if args.peer else 0)
    estimate = len(args.workers) * targets_per_group * (args.rounds * args.duration + args.warmup + 5)
    print(f"running for about {estimate / 60:.1f} minutes", file=sys.stderr, flush=True)
    started = datetime.now(UTC)
    load_before = load_average()
    bench = Bench(args)
    results: list[tuple[int, list[Target]]] = []
    with stop_on_sigterm():
        try:
            if args.peer:
                install_peer()
                bench.start_peer()
            for workers in args.workers:
                results.append((workers, bench.measure(workers)))
        finally:
            bench.close()
        signing = signing_costs() if {"RS256", "EdDSA"} <= set(args.algs) else {}
    command = "python bench/issuance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"### Issuance, client_credentials ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command.strip()}`: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} interleaved rounds per target (median shown), {args.warmup:g} s warm-up; "
        f"{os.cpu_count()} CPUs shared by servers and wrk (load average {load_before} before, "
        f"{load_average()} after); {versions()}; {chit_source()}"
        + (f"; peer: oidc-provider {peer_version()} on Node {node_version()}." if args.peer else "."),
        "",
    ]
    for workers, targets in results:
        lines += [*table(workers, targets, signing), ""]
    if len(results) > 1:
        lines.append("Scaling from the first to the last worker count (same run):")
        lines.append("")
        (w0, first), (w1, last) = results[0], results[-1]
        for a, b in zip(first, last, strict=True):
            ratio = median(b, "ok_per_s") / median(a, "ok_per_s")
            if a.is_peer:
                lines.append(f"- {a.label}: the same process in both groups, {ratio:.2f}{TIMES}")
            else:
                lines.append(f"- {a.label}: {w1} vs {w0} workers {ratio:.2f}{TIMES}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
