"""Benchmark: delegation by token exchange (RFC 8693) beside client_credentials issuance, same run.

Starts ``chit serve --workers 1 --signing-alg ALG`` (``--workers N`` for more) on a fresh temporary
data directory, registers the photo example's image store (which may act for users) and tagging
service, adds a user and logs her in once (``CHIT_ACCESS_TOKEN_TTL`` raised so that her token outlives
the run). Then, interleaved in every round, ``wrk`` drives the token endpoint with:

* ``client_credentials`` for the image store's own account: the reference;
* a token exchange of the user's token by the image store, addressed to the tagging service (the
  subject token verified and checked for revocation, the user's current grants read, ``act`` built);
* the redemption of a deferred delegation the image store obtained for her (handle lookup, hash
  compare; the redemption is counted by its audit event, in the audit's group commit);
* the bare FastAPI app of ``baseline_app.py`` (``POST /empty``), the no-work floor of the same machine.

Each row reports 2xx/s and the server's CPU µs per 2xx, and the exchange rows their ratio to
``client_credentials`` (the target: an exchange costs at most 1.5 times a client_credentials issuance):
the median over rounds of each round's ratio, so that the machine's drift between rounds cancels out.
With one worker and two CPUs or more, the servers run on the last CPU and wrk on the others.

    .venv/bin/python bench/exchange.py --duration 5 --rounds 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import httpx
from benchinfo import chit_source, load_average, versions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from issuance import (
    HOST,
    TIMES,
    Server,
    Target,
    basic_authorization,
    check_target,
    free_port,
    median,
    run_cli,
    run_wrk,
    stop_on_sigterm,
)

BENCH_DIR = Path(__file__).resolve().parent
EXAMPLES = BENCH_DIR.parent / "examples" / "photos"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED = "urn:chit:token-type:deferred-delegation"
TARGET_RATIO = 1.5
USER_ROLES = ("image-store:owner", "tagging:editor")


def form(**fields: str) -> str:
    return "&".join(f"{name}={quote_plus(value)}" for name, value in fields.items())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = sys.executable
        self.tmp = Path(tempfile.mkdtemp(prefix="chit-bench-exchange-"))
        self.servers: list[Server] = []
        self.placed = "not pinned"

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, server: Server) -> Server:
        self.servers.append(server)
        server.start()
        return server

    def start_baseline(self) -> Server:
        port = free_port()
        command = [self.python, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(BENCH_DIR)]
        command += ["--host", HOST, "--port", str(port), "--http", "httptools", "--loop", "uvloop"]
        command += ["--no-access-log", "--log-level", "warning"]
        key = self.tmp / "baseline-ed25519.pem"
        key.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        env = {**os.environ, "BENCH_BASELINE_KEY": str(key)}
        return self.start(Server("baseline", command, port, env, self.tmp / "baseline.log"))

    def start_chit(self) -> tuple[Server, str, str, str]:
        """The server, the image store's Basic authorization, the user's token and a deferred handle."""
        data_dir = self.tmp / "chit"
        port = free_port()
        chit = [self.python, "-m", "chit"]
        command = [*chit, "serve", "--host", HOST, "--port", str(port), "--workers", str(self.args.workers)]
        command += ["--signing-alg", self.args.alg, "--data-dir", str(data_dir)]
        env = {**os.environ, "CHIT_ADMIN_PASSWORD": secrets.token_urlsafe(16), "CHIT_ACCESS_TOKEN_TTL": "86400"}
        server = self.start(Server(f"chit {self.args.alg}", command, port, env, self.tmp / "chit.log"))
        location = ["--data-dir", str(data_dir)]
        secrets_by_service = {}
        for service in ("image-store", "tagging"):
            done = run_cli([*chit, "service", "register", str(EXAMPLES / f"{service}.toml"), "--json", *location], env)
            secrets_by_service[service] = json.loads(done.stdout)["client_secret"]
        password = secrets.token_urlsafe(16)
        roles = [arg for role in USER_ROLES for arg in ("--role", role)]
        add = [*chit, "user", "add", "alice", "--password-stdin", *roles, *location]
        done = subprocess.run(add, env=env, input=password + "\n", capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        token_url = server.url + "/oauth2/token"
        login = {"grant_type": "password", "client_id": "chit-cli", "username": "alice", "password": password}
        user_token = httpx.post(token_url, data=login, timeout=30).json()["access_token"]
        auth = ("image-store", secrets_by_service["image-store"])
        defer = {"grant_type": EXCHANGE, "subject_token": user_token, "subject_token_type": ACCESS}
        handle = httpx.post(token_url, data={**defer, "requested_token_type": DEFERRED}, auth=auth, timeout=30)
        handle.raise_for_status()
        return server, basic_authorization(*auth), user_token, handle.json()["access_token"]

    def measure(self) -> list[Target]:
        baseline = self.start_baseline()
        server, authorization, user_token, handle = self.start_chit()
        url = server.url + "/oauth2/token"
        alg = self.args.alg
        targets = [
            Target("baseline: no work (`POST /empty`)", baseline.url + "/empty", baseline.pgid),
            Target("chit client_credentials (the image store's own account)", url, server.pgid, authorization, alg),
            Target(
                "chit token exchange: the user's token, for tagging",
                url,
                server.pgid,
                authorization,
                alg,
                body=form(grant_type=EXCHANGE, subject_token=user_token, subject_token_type=ACCESS, audience="tagging"),
            ),
            Target(
                "chit deferred delegation redeemed",
                url,
                server.pgid,
                authorization,
                alg,
                body=form(grant_type=EXCHANGE, subject_token=handle, subject_token_type=DEFERRED),
            ),
        ]
        self.placed = pin(self.servers) if self.args.workers == 1 else "not pinned (the workers need every CPU)"
        for target in targets:
            check_target(target)
            run_wrk(target, self.args, self.args.warmup)
        for round_no in range(self.args.rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                result = run_wrk(target, self.args, self.args.duration)
                target.runs.append(result)
                print(
                    f"  round {round_no + 1}: {target.label}: {result['ok_per_s']:.0f}/s", file=sys.stderr, flush=True
                )
        return targets


def pin(servers: list[Server]) -> str:
    """Keep the servers' processes (every thread) on the last CPU and this process, with the wrk it starts,
    on the others: neither migrates onto the other's core mid-run. What was done, for the report."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return "not pinned (one CPU)"
    server_cpus, wrk_cpus = {available[-1]}, set(available[:-1])
    for server in servers:
        for pid in subprocess.run(["pgrep", "-g", str(server.pgid)], capture_output=True, text=True).stdout.split():
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(task.name), server_cpus)
    os.sched_setaffinity(0, wrk_cpus)
    return f"servers pinned to CPU {available[-1]}, wrk to CPU {','.join(map(str, sorted(wrk_cpus)))}"


def paired(target: Target, reference: Target) -> float:
    """The median over rounds of the target's CPU per 2xx ÷ the reference's in the same round."""
    return statistics.median(
        run["cpu_us_per_ok"] / ref["cpu_us_per_ok"] for run, ref in zip(target.runs, reference.runs, strict=True)
    )


def table(targets: list[Target]) -> list[str]:
    reference = targets[1]
    ref_rate = median(reference, "ok_per_s")
    lines = [
        f"| request | 2xx/s (median) | each round | server CPU µs per 2xx | {TIMES} client_credentials CPU "
        "| non-2xx | socket errors | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        rounds = ", ".join(f"{run['ok_per_s']:.0f}" for run in target.runs)
        cpu = median(target, "cpu_us_per_ok")
        lines.append(
            f"| {target.label} | {median(target, 'ok_per_s'):,.0f} | {rounds} | {cpu:,.0f} "
            f"| {paired(target, reference):.2f}{TIMES} "
            f"| {sum(r['non_2xx'] for r in target.runs):.0f} | {sum(r['socket_errors'] for r in target.runs):.0f} "
            f"| {median(target, 'p50_ms'):.1f} | {median(target, 'p99_ms'):.1f} |"
        )
    lines.append("")
    for target in targets[2:]:
        ratio = paired(target, reference)
        verdict = "met" if ratio <= TARGET_RATIO else "not met"
        lines.append(
            f"- {target.label}: CPU per token **{ratio:.2f}{TIMES}** client_credentials "
            f"(target at most {TARGET_RATIO:g}{TIMES}: {verdict}); throughput "
            f"{median(target, 'ok_per_s') / ref_rate:.2f}{TIMES}."
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alg", default="EdDSA", choices=["RS256", "ES256", "EdDSA"])
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2, 4], help="chit serve --workers")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up per target")
    parser.add_argument("--rounds", type=int, default=4, help="measured runs per target, interleaved")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60 or not 0 < args.warmup <= 30 or not 1 <= args.rounds <= 10:
        parser.error("keep --duration within 1-60 s, --warmup within 0-30 s and --rounds within 1-10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    started, load_before = datetime.now(UTC), load_average()
    bench = Bench(args)
    with stop_on_sigterm():
        try:
            targets = bench.measure()
        finally:
            bench.close()
    command = "python bench/exchange.py " + " ".join(argv if argv is not None else sys.argv[1:])
    workers = "one chit worker" if args.workers == 1 else f"{args.workers} chit workers"
    lines = [
        f"#### Token exchange beside client_credentials ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command.strip()}`: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rounds} "
        f"interleaved rounds per target (median shown; {TIMES} client_credentials: the median of each round's "
        f"ratio), {args.warmup:g} s warm-up; {bench.placed}; {workers}, {args.alg}; "
        f"{os.cpu_count()} CPUs shared by the servers and wrk (load average {load_before} before, "
        f"{load_average()} after); {versions()}; {chit_source()}.",
        "",
        *table(targets),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
