"""How long `chit demo` takes to start: from the command to the auth server and the six example services
answering, as the demo prints it ("Started the auth server and 6 services in X s"), and the whole
`--once` run. Target (issue 18): under 15 s on the development machine.

Beside each run, in the same run: how long one bare `chit serve` takes to answer /healthz on an empty
data directory (the floor under the demo's start: it starts that, then six services at once).

    .venv/bin/python bench/demo_startup.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from benchinfo import chit_source, load_average, versions

ROOT = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"Started the auth server and (\d+) services in ([0-9.]+) s")
TARGET = 15.0  # seconds
TIMES = "\u00d7"  # the multiplication sign, in ratios


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")} | {"COLUMNS": "200"}


def demo_once() -> tuple[float, float]:
    """(the start the demo printed, the whole --once run) in seconds."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "chit", "demo", "--once", "--examples", str(ROOT / "examples")],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    total = time.monotonic() - began
    found = STARTED.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"chit demo --once failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(found.group(2)), total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bare_serve() -> float:
    """Seconds from `chit serve` on an empty data directory to /healthz answering 200."""
    data = Path(tempfile.mkdtemp(prefix="chit-bench-serve-"))
    port = free_port()
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "chit", "serve", "--data-dir", str(data / "d"), "--port", str(port)],
        env=environment() | {"CHIT_ADMIN_PASSWORD": "bench-password-1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() - began > 60:
                raise SystemExit("chit serve did not start")
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="demo runs, each beside one bare chit serve (1-10)")
    args = parser.parse_args()
    runs = max(1, min(10, args.runs))
    before = load_average()
    rows = []
    for n in range(runs):
        print(f"run {n + 1}/{runs}", file=sys.stderr, flush=True)
        serve = bare_serve()
        started, total = demo_once()
        rows.append((serve, started, total))
    median_start = statistics.median(r[1] for r in rows)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"#### chit demo, start ({stamp})\n")
    print(
        f"`python bench/demo_startup.py --runs {runs}`: each run a bare `chit serve` to /healthz, then "
        f"`chit demo --once`; 2 CPUs shared (load average {before} before, {load_average()} after); "
        f"{versions()}; {chit_source()}.\n"
    )
    print(f"| run | bare `chit serve` s | demo start s | {TIMES} bare serve | whole `--once` s |")
    print("|---|---:|---:|---:|---:|")
    for n, (serve, started, total) in enumerate(rows, 1):
        print(f"| {n} | {serve:.1f} | {started:.1f} | {started / serve:.2f}{TIMES} | {total:.1f} |")
    met = "met" if median_start < TARGET else "not met"
    print(f"\n- demo start, median **{median_start:.1f} s** (target under {TARGET:.0f} s: {met}).")


if __name__ == "__main__":
    main()
