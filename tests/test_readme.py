"""Every shell snippet of the README runs, in order, against a server started as the README says; the first
one runs the demo (``--once``), whose output is also the transcript that docs/demo.md walks through.

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
import pytest
from helpers import ROOT, free_port

from chit.demo.walkthrough import steps

INSTALL = 'python3 -m venv .venv && .venv/bin/pip install ".[server]" && '
DEMO_RUN_TIMEOUT = 180  # seconds; it starts in under 15 and walks through in a few more


def shell_snippets() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_test_command_is_what_ci_runs() -> None:
    snippets = shell_snippets()
    assert snippets[-1].strip() == "./scripts/test"
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def in_a_clone(directory: Path) -> Path:
    """``directory`` made to look like the clone the README speaks of: its ``.venv`` is the environment
    running the tests, its ``examples`` the repository's."""
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (directory / "examples").symlink_to(ROOT / "examples")
    return directory


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the README's first command prints, run with ``--once`` so that it ends after the walkthrough."""
    demo = shell_snippets()[0]
    assert demo.startswith(INSTALL), demo
    clone = in_a_clone(tmp_path_factory.mktemp("clone"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")} | {"COLUMNS": "200"}
    done = subprocess.run(
        ["bash", "-c", demo.removeprefix(INSTALL).strip() + " --once"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_readme_first_command_runs_the_demo_and_every_step_is_decided_as_expected(demo_output: str) -> None:
    count = len(list(steps()))
    assert f"All {count} steps were decided as expected" in demo_output
    assert f"walks through {count} requests" in " ".join((ROOT / "README.md").read_text().split())
    assert "Stopped the 7 processes the demo started" in demo_output
    assert "Traceback" not in demo_output


def normalized(line: str) -> str:
    """A transcript line without what differs from run to run: ids, milliseconds."""
    line = re.sub(r"\b(cli|ord|usr)_[0-9a-z…]+", r"\1_…", line.rstrip())
    return re.sub(r"\(\d+ ms after", "(N ms after", line)


def test_the_demo_page_transcript_is_what_the_demo_prints(demo_output: str) -> None:
    page = (ROOT / "docs" / "demo.md").read_text()
    transcript = [
        normalized(line) for block in re.findall(r"```text\n(.*?)```", page, flags=re.S) for line in block.splitlines()
    ]
    printed = [normalized(line) for line in demo_output.splitlines()]
    assert len(transcript) == 3 * len(list(steps()))  # every step, its three lines
    at = 0
    for line in transcript:  # in order
        assert line in printed[at:], line
        at = printed.index(line, at) + 1


def test_readme_snippets_run_against_a_fresh_server(tmp_path: Path) -> None:
    _demo, serve, *commands, _test_command = shell_snippets()
    assert serve.startswith(INSTALL), serve
    port = free_port()
    in_a_clone(tmp_path)
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
        for step in commands:
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
