"""The processes ``chit demo`` runs: the auth server and the example services, each a child process of
the demo with its log in a file; started together, stopped together whatever happens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chit.errors import ChitError
from chit.server.config import listen_problem

START_TIMEOUT = 30.0  # seconds a process has to answer its readiness URL
STOP_TIMEOUT = 5.0  # seconds a process has to end on SIGTERM before it is killed
LOG_TAIL = 1500  # characters of a failed process's log quoted in the error


class DemoError(ChitError):
    """The demo cannot go on: the message says what to fix."""


@dataclass
class Process:
    """One child process: ``argv`` run with ``env`` on top of the demo's environment (without its
    ``CHIT_*`` settings), ready when ``ready_url`` answers 200."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
        with open(self.log_path, "ab") as log:  # a file, not a pipe: a pipe nobody reads would block the child
            self.popen = subprocess.Popen(  # noqa: S603 (the demo's own commands: this Python, chit, uvicorn)
                self.argv, env={**inherited, **self.env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once ``ready_path`` answers 200; a ``DemoError`` quoting the log if the process ends or
        does not answer in time."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                if self.popen is None or self.popen.poll() is not None:
                    code = None if self.popen is None else self.popen.returncode
                    raise DemoError(f"{self.name} exited with {code} while starting:\n{self.log_tail()}")
                try:
                    if client.get(self.url + self.ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{self.name} did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-LOG_TAIL:].rstrip() or "(the log is empty)"

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.terminate()

    def wait_stopped(self, until: float) -> None:
        """Wait for the process to end until the monotonic time ``until``, then kill it."""
        popen = self.popen
        if popen is None:
            return
        try:
            popen.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def python(*args: str) -> list[str]:
    """A command run by the Python that runs the demo, so that the children find chit as it does."""
    return [sys.executable, *args]


def uvicorn(module: str, app_dir: Path, port: int) -> list[str]:
    """An example service's FastAPI app (``module:app`` in ``app_dir``) under uvicorn, as one deploys it."""
    return python(
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    )


def start_all(processes: Iterable[Process]) -> None:
    """Start the processes together and wait until every one is ready; a ``DemoError`` for the first that
    is not (the caller stops them all)."""
    started = list(processes)
    for process in started:
        process.start()
    pool = ThreadPoolExecutor(max(1, len(started)))
    try:
        for waited in [pool.submit(process.wait_ready) for process in started]:
            waited.result()
    finally:  # interrupted, or one failed: the waits left end as their processes are stopped
        pool.shutdown(wait=False, cancel_futures=True)


def stop_all(processes: Iterable[Process]) -> None:
    """SIGTERM to every process still running, then wait up to ``STOP_TIMEOUT`` seconds before killing."""
    running = [process for process in processes if process.running]
    for process in running:
        process.terminate()
    until = time.monotonic() + STOP_TIMEOUT
    for process in running:
        process.wait_stopped(until)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def check_free(port: int, what: str, option: str) -> None:
    """A ``DemoError`` naming the fix when something already listens on ``port``."""
    problem = listen_problem("127.0.0.1", port)
    if problem is not None:
        raise DemoError(
            f"cannot listen on 127.0.0.1:{port} for {what}: {problem}. Stop what uses the port, "
            f"or leave out {option} to let the demo pick a free one"
        )


def assign_ports(wanted: Mapping[str, int | None], options: Mapping[str, str]) -> dict[str, int]:
    """A port for each name: the one asked for (checked free; ``options`` names the option that asked),
    or a free one; no two the same."""
    ports: dict[str, int] = {}
    for name, port in wanted.items():
        if port is not None:
            if port in ports.values():
                raise DemoError(f"port {port} is asked for twice: give {options[name]} another one")
            check_free(port, name, options[name])
            ports[name] = port
    for name, port in wanted.items():
        if port is None:
            while (candidate := free_port()) in ports.values():
                continue
            ports[name] = candidate
    return ports
