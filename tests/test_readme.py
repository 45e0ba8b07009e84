"""Every shell snippet of the README runs, in order, against a server started as the README says.

The install step (`python3 -m venv .venv && .venv/bin/pip install ".[server]"`) is what ``scripts/test`` has
just done for this test run (in `.venv-test`), so here `.venv` points at the environment running the
tests; the test command itself is checked to be the one ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import ROOT, free_port

INSTALL = 'python3 -m venv .venv && .venv/bin/pip install ".[server]" && '


def shell_snippets() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_test_command_is_what_ci_runs() -> None:
    snippets = shell_snippets()
    assert snippets[-1].strip() == "./scripts/test"
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_snippets_run_against_a_fresh_server(tmp_path: Path) -> None:
    serve, *steps, _test_command = shell_snippets()
    assert serve.startswith(INSTALL), serve
    port = free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        ["bash", "-c", f"{serve.removeprefix(INSTALL).strip()} --port {port}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so that stopping the group stops chit, not just bash
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        outputs = []
        for step in steps:
            script = step.replace("127.0.0.1:8700", f"127.0.0.1:{port}")
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (step, done.stdout, done.stderr)
            outputs.append(done.stdout)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()
    first_token, service_token, inspect, services, everyday = outputs
    assert '"access_token"' in first_token
    assert '"scope":"chit:*:*"' in first_token
    assert '"scope":"image-store:images:read image-store:images:read-any"' in service_token
    assert "signature: valid" in inspect
    assert "Published key" in inspect
    assert "Service tagging is registered and unchanged" in services
    assert "Granted image-store:owner to carol" in services
    assert "The audit log is intact" in services
    assert (tmp_path / "chit-data" / "chit.db").exists()
    assert "carol" in everyday  # the user list, the grants and the API key's owner name her
    assert "image-store:owner" in everyday
    assert "image-store:images:read" in everyday
    assert everyday.rstrip().endswith("chit 0.1.0")


def test_readme_manifests_are_the_example_files() -> None:
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```toml\n(.*?)```", text, flags=re.S):
        path = block.splitlines()[0].removeprefix("# ")
        assert (ROOT / path).read_text().split("\n", 1)[1] == block.split("\n", 1)[1], path
