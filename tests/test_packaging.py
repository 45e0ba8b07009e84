"""`pip install chit` is the service SDK alone: the wheel, installed without extras into a fresh
virtual environment, verifies a token of a real `chit serve` and brings no server dependency.

The wheel is built from a copy of the sources (a build writes `build/` and `*.egg-info` next to
them) and its dependencies come from the package index, so this takes about a minute.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, ChitServer, register_services

pytestmark = pytest.mark.packaging
Completed = subprocess.CompletedProcess[str]

# distribution names (as `pip list` spells them, normalised) and import names of the server's dependencies
SERVER_DISTRIBUTIONS = {
    "alembic",
    "argon2-cffi",
    "fastapi",
    "psycopg",
    "psycopg-binary",
    "rich",
    "sqlalchemy",
    "starlette",
    "typer",
    "uvicorn",
}
SERVER_MODULES = {"alembic", "argon2", "fastapi", "psycopg", "rich", "sqlalchemy", "starlette", "typer", "uvicorn"}

# what a service does with the SDK alone: verify the token on stdin, print what it learnt
SERVICE = """
import asyncio, json, sys

from chit.sdk import TokenVerifier


async def main(issuer: str, token: str) -> None:
    async with TokenVerifier(issuer, "image-store") as verifier:
        principal = await verifier.verify(token)
    print(json.dumps({
        "subject": principal.subject,
        "client_id": principal.client_id,
        "permissions": sorted(map(str, principal.permissions)),
        "loaded": sorted({name.partition(".")[0] for name in sys.modules} & set(sys.argv[2].split(","))),
    }))


asyncio.run(main(sys.argv[1], sys.stdin.read().strip()))
"""


def clean_env() -> dict[str, str]:
    """This process's environment without what would let the fresh one see the development tree."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CHIT_")}


def run(*args: str | Path, cwd: Path, timeout: float = 120, stdin: str | None = None) -> Completed:
    command = [str(a) for a in args]
    return subprocess.run(
        command, cwd=cwd, env=clean_env(), input=stdin, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the chit wheel installed without extras: its bin directory."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = base / "dist"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source, cwd=base, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("chit-*.whl")
    env_dir = base / "venv"
    created = run(sys.executable, "-m", "venv", env_dir, cwd=base)
    assert created.returncode == 0, created.stderr
    installed = run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=base, timeout=600)
    assert installed.returncode == 0, installed.stderr
    return env_dir / "bin"


def test_a_service_verifies_a_token_with_the_sdk_alone(venv: Path, server: ChitServer, tmp_path: Path) -> None:
    register_services(server, tmp_path, {"image-store": ["images:read"]})
    secret = server.add_client("svc", "--scope", "image-store:images:read")["client_secret"]
    answer = httpx.post(server.token_url, data={"grant_type": "client_credentials"}, auth=("svc", secret), timeout=30)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    done = run(venv / "python", "-c", SERVICE, server.url, ",".join(sorted(SERVER_MODULES)), cwd=tmp_path, stdin=token)

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["subject"] == claims["sub"]
    assert seen["client_id"] == "svc"
    assert seen["permissions"] == ["image-store:images:read"]
    assert seen["loaded"] == []


def test_no_server_dependency_is_installed(venv: Path, tmp_path: Path) -> None:
    listed = run(venv / "python", "-m", "pip", "list", "--format=json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert {"chit", "httpx", "pyjwt", "cryptography", "biscuit-python"} <= names
    assert names & SERVER_DISTRIBUTIONS == set()


@pytest.mark.parametrize(
    ("code", "framework"),
    [
        ("import chit; chit.Verifier", "FastAPI"),
        ("from chit import Verifier", "FastAPI"),
        ("import chit.sdk; chit.sdk.BearerAuthMiddleware", "Starlette"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(
    venv: Path, tmp_path: Path, code: str, framework: str
) -> None:
    done = run(venv / "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), done.stderr
    assert f"needs {framework}" in last
    assert 'pip install "chit[fastapi]"' in last


def test_the_framework_free_sdk_imports_without_a_framework(venv: Path, tmp_path: Path) -> None:
    done = run(
        venv / "python",
        "-c",
        "import chit, chit.sdk; "
        "from chit.sdk import TokenVerifier, ServiceIdentity, RevokedTokens, JwksClient, current_principal; "
        "from chit import Principal, ServiceIdentity, InvalidTokenError",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_the_chit_command_says_what_to_install(venv: Path, tmp_path: Path) -> None:
    for command in ([venv / "chit", "serve"], [venv / "python", "-m", "chit", "--help"]):
        done = run(*command, cwd=tmp_path)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert 'pip install "chit[server]"' in done.stderr
