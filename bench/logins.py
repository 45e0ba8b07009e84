"""Benchmark: password logins on ``chit serve`` against raw Argon2 on the same cores, and what they leave
to client-credentials traffic sent at the same time.

In one run, on 127.0.0.1 only:

1. raw argon2-cffi: ``argon2.low_level.verify_secret`` on a hash made by chit's own ``hash_password``
   (so with chit's parameters), in as many processes as ``chit serve`` has workers, each with 1, 2, 4
   and 8 threads (argon2-cffi releases the GIL); the best of these is the raw rate;
2. ``chit serve`` (``--workers``, one by default) answering password grants for the first-party client
   ``chit-cli`` under ``wrk``, several users in turn (``login_post.lua``), in rounds each right after
   a raw run with the best thread count, so that the machine's drift hits both sides of each ratio;
3. the same server's client_credentials grant under ``wrk``, alone, then at the same time as the
   logins (two ``wrk`` processes in parallel): both rates of that one interval, and the client
   credentials rate as a fraction of its rate alone, with p99 latencies.

The target (issue 19): logins at least 0.9x the raw rate, with Argon2 parameters never below OWASP's
minimum for Argon2id (m=19 MiB, t=2, p=1), and client credentials not starved by the logins.

    .venv/bin/python bench/logins.py            # about 2.3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import argon2
import httpx
from argon2.low_level import Type, verify_secret
from benchinfo import chit_source, load_average, versions
from issuance import (
    HOST,
    Server,
    free_port,
    group_cpu_seconds,
    register_bench_client,
    stop_on_sigterm,
)

from chit.server.credentials import hash_password

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "login_post.lua"
TIMES = "\u00d7"
TARGET = 0.9  # logins/s at least 0.9x the raw Argon2 verification rate
OWASP_MIN = {"m": 19 * 1024, "t": 2, "p": 1}  # OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane
FIRST_PARTY_CLIENT = "chit-cli"
PASSWORD = "correct horse battery staple"  # the same for every user: the work per login does not depend on it


@dataclass
class RawRun:
    processes: int
    threads: int
    per_s: float
    cpu_ms: float  # CPU time of the verifying processes per verification


@dataclass
class WrkRun:
    per_s: float  # 2xx answers per second
    cpu_us: float  # server CPU per 2xx (of the whole interval: with two loads, shared between them)
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


def _verify_for(password_hash: str, threads: int, seconds: float, warmup: float) -> tuple[float, float]:
    """Verify ``password_hash`` in ``threads`` threads for ``warmup + seconds`` and more: how many
    verifications the last ``seconds`` held (each counted for the share of its duration that fell in
    them, so that no verification is cut off or counted whole at the edges), and the process's CPU
    seconds in them."""
    encoded, secret = password_hash.encode(), PASSWORD.encode()
    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + seconds
    spans: list[tuple[float, float]] = []

    def work() -> None:
        began = time.monotonic()
        while began < window_end:
            verify_secret(encoded, secret, Type.ID)
            ended = time.monotonic()
            spans.append((began, ended))  # list.append is atomic under the GIL
            began = ended

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(max(window_start - time.monotonic(), 0))
    cpu_before = time.process_time()
    time.sleep(max(window_end - time.monotonic(), 0))
    cpu = time.process_time() - cpu_before
    for worker in workers:
        worker.join()
    held = sum(max(min(b, window_end) - max(a, window_start), 0) / (b - a) for a, b in spans if b > a)
    return held, cpu


def raw_rate(password_hash: str, processes: int, threads: int, seconds: float, warmup: float) -> RawRun:
    if processes == 1:
        results = [_verify_for(password_hash, threads, seconds, warmup)]
    else:
        with ProcessPoolExecutor(processes) as pool:
            futures = [pool.submit(_verify_for, password_hash, threads, seconds, warmup) for _ in range(processes)]
            results = [f.result() for f in futures]
    held = sum(r[0] for r in results)
    cpu_ms = sum(r[1] for r in results) / held * 1000 if held else float("nan")
    return RawRun(processes, threads, held / seconds, cpu_ms)


def argon2_parameters(password_hash: str) -> dict[str, int]:
    params = argon2.extract_parameters(password_hash)
    return {"m": params.memory_cost, "t": params.time_cost, "p": params.parallelism}


class Wrk:
    """One wrk process, started now and read when it ends."""

    def __init__(
        self,
        url: str,
        bodies: list[str],
        authorization: str,
        args: argparse.Namespace,
        duration: float,
        connections: int,
    ) -> None:
        assert url.startswith(f"http://{HOST}:")
        env = {**os.environ, "BENCH_BODIES": "\n".join(bodies), "BENCH_AUTHORIZATION": authorization}
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(LUA_SCRIPT), url]
        self.duration = duration
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, cpu_seconds: float) -> WrkRun:
        try:
            stdout, stderr = self.process.communicate(timeout=self.duration + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        line = next((x for x in stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
        if self.process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed:\n{stdout}\n{stderr}")
        raw = json.loads(line.removeprefix("BENCH_RESULT "))
        ok = raw["requests"] - raw["status"]
        return WrkRun(
            per_s=ok / (raw["duration_us"] / 1e6),
            cpu_us=cpu_seconds / ok * 1e6 if ok else float("nan"),
            non_2xx=raw["status"],
            socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
            p50_ms=raw["p50_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
        )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="chit-bench-logins-"))
        self.server: Server | None = None
        self.url = ""
        self.login_bodies: list[str] = []
        self.cc_authorization = ""

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_chit(self) -> None:
        args = self.args
        data_dir, port = self.tmp / "chit", free_port()
        chit = [sys.executable, "-m", "chit"]
        command = [*chit, "serve", "--host", HOST, "--port", str(port), "--workers", str(args.workers)]
        command += ["--data-dir", str(data_dir)]
        env = {**os.environ, "CHIT_ADMIN_PASSWORD": secrets.token_urlsafe(16)}
        self.server = Server(f"chit ({args.workers} workers)", command, port, env, self.tmp / "chit.log")
        self.server.start()
        self.url = self.server.url + "/oauth2/token"
        self.cc_authorization = register_bench_client(chit, data_dir, env, self.tmp)
        location = ["--data-dir", str(data_dir)]
        for n in range(args.users):
            username = f"bench-user-{n}"
            done = subprocess.run(
                [*chit, "user", "add", username, "--password-stdin", "--json", *location],
                env=env,
                input=PASSWORD + "\n",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"user add exited with {done.returncode}: {done.stderr.strip()}")
            form = {
                "grant_type": "password",
                "client_id": FIRST_PARTY_CLIENT,
                "username": username,
                "password": PASSWORD,
            }
            self.login_bodies.append(urlencode(form))
        for body, authorization in (
            (self.login_bodies[0], ""),
            ("grant_type=client_credentials", self.cc_authorization),
        ):
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if authorization:
                headers["Authorization"] = authorization
            response = httpx.post(self.url, content=body, headers=headers, timeout=30)
            if response.status_code != 200 or "access_token" not in response.json():
                raise RuntimeError(f"{body.split('&')[0]}: {response.status_code} {response.text[:300]}")

    def login_wrk(self, duration: float) -> Wrk:
        return Wrk(self.url, self.login_bodies, "", self.args, duration, self.args.login_connections)

    def cc_wrk(self, duration: float) -> Wrk:
        return Wrk(
            self.url,
            ["grant_type=client_credentials"],
            self.cc_authorization,
            self.args,
            duration,
            self.args.cc_connections,
        )

    def run(self, *loads: Wrk) -> list[WrkRun]:
        assert self.server is not None
        cpu_before = group_cpu_seconds(self.server.pgid)
        for load in loads:
            load.process.wait(timeout=load.duration + 60)
        cpu = group_cpu_seconds(self.server.pgid) - cpu_before
        return [load.result(cpu) for load in loads]


def fmt_wrk(label: str, run: WrkRun, note: str = "", shared: bool = False) -> str:
    cpu = "(shared)" if shared else f"{run.cpu_us / 1000:,.2f}"  # two loads at once: no CPU of one's own
    return (
        f"| {label} | {run.per_s:,.1f} | {note} | {cpu} | {run.non_2xx} | {run.socket_errors} "
        f"| {run.p50_ms:,.1f} | {run.p99_ms:,.1f} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="chit serve workers, and raw Argon2 processes (1)")
    parser.add_argument("--users", type=int, default=4, help="users logging in, in turn (4)")
    parser.add_argument("--raw-threads", type=int, nargs="+", default=[1, 2, 4, 8], help="threads per process")
    parser.add_argument("--raw-seconds", type=float, default=6.0, help="seconds per raw Argon2 measurement")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per measured login run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of raw Argon2 then chit logins")
    parser.add_argument("--cc-duration", type=float, default=10.0, help="seconds of client credentials alone")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each load")
    parser.add_argument("--login-connections", type=int, default=8, help="wrk connections sending logins")
    parser.add_argument("--cc-connections", type=int, default=32, help="wrk connections sending client credentials")
    args = parser.parse_args(argv)
    if not 5 <= args.duration <= 60 or not 5 <= args.cc_duration <= 60 or not 2 <= args.raw_seconds <= 30:
        parser.error("keep --duration and --cc-duration within 5-60 s and --raw-seconds within 2-30 s")
    if not 0 < args.warmup <= 10 or not 1 <= args.workers <= 4 or not 1 <= args.users <= 64:
        parser.error("keep --warmup within 0-10 s, --workers within 1-4 and --users within 1-64")
    if not 1 <= args.rounds <= 5 or not all(1 <= n <= 32 for n in args.raw_threads):
        parser.error("keep --rounds within 1-5 and --raw-threads within 1-32")
    return args


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        progress("wrk is not installed (apt-get install -y wrk)")
        return 2
    sweep = len(args.raw_threads) * (args.raw_seconds + 1)
    rounds = args.rounds * (args.raw_seconds + 1 + args.duration)
    estimate = sweep + rounds + args.cc_duration + args.duration + 3 * args.warmup + 15
    progress(f"running for about {estimate / 60:.1f} minutes")
    started, load_before = datetime.now(UTC), load_average()
    password_hash = hash_password(PASSWORD)  # chit's own parameters
    params = argon2_parameters(password_hash)
    bench = Bench(args)
    raw: list[RawRun] = []
    pairs: list[tuple[RawRun, WrkRun]] = []
    with stop_on_sigterm():
        try:
            bench.start_chit()
            for threads in args.raw_threads:
                raw.append(raw_rate(password_hash, args.workers, threads, args.raw_seconds, 1.0))
                progress(f"  raw argon2, {args.workers} process(es) x {threads} threads: {raw[-1].per_s:.2f}/s")
            best = max(raw, key=lambda r: r.per_s)
            bench.run(bench.login_wrk(args.warmup))
            for round_no in range(args.rounds):
                again = raw_rate(password_hash, args.workers, best.threads, args.raw_seconds, 1.0)
                logins = bench.run(bench.login_wrk(args.duration))[0]
                pairs.append((again, logins))
                progress(
                    f"  round {round_no + 1}: raw argon2 {again.per_s:.2f}/s, chit logins {logins.per_s:.2f}/s, "
                    f"{logins.non_2xx} non-2xx"
                )
            bench.run(bench.cc_wrk(args.warmup))
            cc_alone = bench.run(bench.cc_wrk(args.cc_duration))[0]
            progress(f"  chit client credentials alone: {cc_alone.per_s:.0f}/s")
            both = bench.run(bench.login_wrk(args.duration), bench.cc_wrk(args.duration))
            progress(f"  together: logins {both[0].per_s:.2f}/s, client credentials {both[1].per_s:.0f}/s")
        finally:
            bench.close()

    ratios = [login.per_s / again.per_s for again, login in pairs]
    ratio = statistics.median(ratios)
    raw_per_s = statistics.median(again.per_s for again, _ in pairs)
    raw_cpu = statistics.median(again.cpu_ms for again, _ in pairs)
    login_cpu = statistics.median(login.cpu_us / 1000 for _, login in pairs)
    ratio_both = both[0].per_s / raw_per_s
    cc_fraction = both[1].per_s / cc_alone.per_s
    owasp_ok = all(params[k] >= OWASP_MIN[k] for k in OWASP_MIN)
    verdict = "met" if ratio >= TARGET and owasp_ok else "not met"
    command = "python bench/logins.py " + " ".join(argv if argv is not None else sys.argv[1:])
    procs = f"{args.workers} process{'es' if args.workers > 1 else ''}"
    best_label = f"{procs} {TIMES} {best.threads} thread{'s' if best.threads > 1 else ''}"
    lines = [
        f"### Password logins against raw Argon2 ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command.strip()}`: chit serve --workers {args.workers} (RS256, storage and audit on, as shipped), "
        f"{args.users} users logging in in turn through `{FIRST_PARTY_CLIENT}` with wrk -t1 "
        f"-c{args.login_connections} -d{args.duration:g}s, {args.rounds} rounds each after a raw run of "
        f"{args.raw_seconds:g} s; client credentials with wrk -t1 -c{args.cc_connections}; "
        f"{os.cpu_count()} CPUs shared by the server, wrk and the raw loops (load average {load_before} before, "
        f"{load_average()} after); argon2-cffi {argon2_version()}, {versions()}; {chit_source()}.",
        "",
        f"Argon2id parameters of chit's hash: m={params['m'] // 1024} MiB, t={params['t']}, p={params['p']} "
        f"(OWASP minimum m=19 MiB, t=2, p=1: {'not below it' if owasp_ok else 'BELOW IT'}).",
        "",
        f"| raw argon2-cffi `verify_secret` on chit's hash, {procs} | verifications/s | CPU ms per verification |",
        "|---|---:|---:|",
    ]
    for run in raw:
        mark = " (best: used below)" if run is best else ""
        lines.append(
            f"| {run.threads} thread{'s' if run.threads > 1 else ''} per process{mark} "
            f"| {run.per_s:.2f} | {run.cpu_ms:.0f} |"
        )
    lines += [
        "",
        f"| round | raw, {best_label} /s | chit logins 2xx/s | {TIMES} raw | raw CPU ms per verification "
        "| server CPU ms per login | non-2xx | socket errors | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, (again, login) in enumerate(pairs, 1):
        lines.append(
            f"| {n} | {again.per_s:.2f} | {login.per_s:.2f} | {login.per_s / again.per_s:.2f}{TIMES} "
            f"| {again.cpu_ms:.0f} | {login.cpu_us / 1000:.0f} | {login.non_2xx} | {login.socket_errors} "
            f"| {login.p50_ms:,.0f} | {login.p99_ms:,.0f} |"
        )
    lines += [
        "",
        "| chit serve, same run | 2xx/s | | server CPU ms per 2xx | non-2xx | socket errors | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        fmt_wrk("client credentials alone", cc_alone),
        fmt_wrk("client credentials, with logins", both[1], f"**{cc_fraction:.2f}{TIMES} alone**", shared=True),
        fmt_wrk("password logins, with client credentials", both[0], f"{ratio_both:.2f}{TIMES} raw", shared=True),
        "",
        f"Logins / raw Argon2 ({best_label}), median of the rounds' ratios: **{ratio:.2f}{TIMES}** "
        f"(target {TARGET:g}{TIMES}: **{verdict}**); CPU per login / per raw verification: "
        f"{login_cpu:.0f} / {raw_cpu:.0f} ms = {login_cpu / raw_cpu:.2f}{TIMES}. Client credentials during "
        f"logins: {both[1].per_s:,.0f}/s = **{cc_fraction:.2f}{TIMES}** their rate alone, p99 "
        f"{both[1].p99_ms:,.1f} ms (alone {cc_alone.p99_ms:,.1f} ms); logins meanwhile "
        f"{both[0].per_s:.2f}/s ({ratio_both:.2f}{TIMES} raw).",
    ]
    print("\n".join(lines))
    return 0


def argon2_version() -> str:
    from importlib.metadata import version

    return version("argon2-cffi")


if __name__ == "__main__":
    sys.exit(main())
