"""``docs/from-tutorial.md`` cannot drift from the code: its diff is ``diff -u`` of the two apps, and its
shell snippets run, in order, as the guide says (the auth server and the app in the background, as in
their own terminals), against the app moved onto chit.

As in ``tests/test_readme.py``, ``.venv`` points at the environment running the tests, and the guide's
ports (8700 for the auth server, uvicorn's 8000 for the app) become free ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from helpers import ROOT, free_port
from tutorial_apps import AFTER, BEFORE, GUIDE


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def test_the_guides_diff_is_the_diff_between_the_two_apps() -> None:
    (shown,) = blocks("diff")
    before, after = (str(path.relative_to(ROOT)) for path in (BEFORE, AFTER))
    done = subprocess.run(
        ["diff", "-u", "--label", before, "--label", after, before, after], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr  # 1: the files differ
    assert shown == done.stdout


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str], url: str) -> Iterator[None]:
    """``command`` running in its own process group until the block ends, once ``url`` answers 200."""
    log_path = cwd / f"background-{len(list(cwd.glob('background-*')))}.log"
    with log_path.open("wb") as log:
        # a group of its own, so that stopping it stops the server, not just bash
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_the_guides_commands_run_against_the_app_on_chit(tmp_path: Path) -> None:
    serve, app, register, calls = blocks("sh")
    chit_port, app_port = free_port(), free_port()

    def on_free_ports(script: str) -> str:
        return script.replace("127.0.0.1:8700", f"127.0.0.1:{chit_port}").replace(
            "127.0.0.1:8000", f"127.0.0.1:{app_port}"
        )

    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    chit_url, app_url = f"http://127.0.0.1:{chit_port}", f"http://127.0.0.1:{app_port}"
    with (
        background(f"{serve.strip()} --port {chit_port}", tmp_path, env, chit_url + "/healthz"),
        background(f"{on_free_ports(app).strip()} --port {app_port}", tmp_path, env, app_url + "/openapi.json"),
    ):
        outputs = []
        for step in (register, calls):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", on_free_ports(step)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (step, done.stdout, done.stderr)
            outputs.append(done.stdout)
    registered, called = outputs
    assert "Registered service items: 2 permissions, 2 roles" in registered
    assert "Created user alice" in registered
    assert "Created user bob" in registered
    # curl prints the three answers back to back: alice's new item, bob's list, bob's refusal with its headers
    answers = re.fullmatch(r'(\{"name":"hammer","owner":"usr_\w+"\})\[(.*?)\](HTTP/1.1 403 .*)', called, flags=re.S)
    assert answers is not None, called
    created, listed, refused = answers.groups()
    assert listed == created
    assert 'error="insufficient_scope"' in refused
