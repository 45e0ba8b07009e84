"""``chit delegation list [--user NAME] [--json]`` and ``chit delegation revoke ID``: deferred
delegations made over HTTP by a registered service, listed and revoked by the operator.

The table runs the real ``chit`` executable as a subprocess; ``FORCE_COLOR`` makes rich treat its stdout
as a terminal, ``COLUMNS`` fixes the width.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ChitServer, ModuleServers, access_token, login

CHIT = str(Path(sys.executable).with_name("chit"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = ("┏", "┃", "┡", "│", "└")
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED = "urn:chit:token-type:deferred-delegation"
PASSWORD = "delegation-cli-password"
TAGGING = """\
id = "tagging"

[permissions]
"tags:write" = "Add or remove tags"

[roles]
editor = ["tags:write"]
"""
IMAGE_STORE = """\
id = "image-store"

[permissions]
"images:read" = "Read"

[roles]
viewer = ["images:read"]

[on_behalf]
permissions = ["tagging:tags:write"]
deferred = ["tagging:tags:write"]
"""


class Installation(NamedTuple):
    chit: ChitServer
    secret: str  # image-store's client secret


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Installation:
    chit = module_server("delegation-cli")
    directory = tmp_path_factory.mktemp("delegation-cli-manifests")
    secrets = []
    for name, manifest in (("tagging", TAGGING), ("image-store", IMAGE_STORE)):
        path = directory / f"{name}.toml"
        path.write_text(manifest, encoding="utf-8")
        secrets.append(chit.cli_ok("service", "register", str(path), "--json").json()["client_secret"])
    return Installation(chit, secrets[1])


@pytest.fixture(scope="module")
def chit(installation: Installation) -> ChitServer:
    return installation.chit


def image_store(installation: Installation, data: dict[str, str]) -> httpx.Response:
    return httpx.post(installation.chit.token_url, data=data, auth=("image-store", installation.secret), timeout=30)


def defer(installation: Installation, username: str, **extra: str) -> str:
    """A deferred delegation of a new user to image-store; its handle."""
    chit = installation.chit
    chit.add_user(username, PASSWORD, "--role", "tagging:editor", "--role", "image-store:viewer")
    data = {
        "grant_type": EXCHANGE,
        "subject_token": access_token(login(chit, username, PASSWORD)),
        "subject_token_type": ACCESS_TOKEN,
        "requested_token_type": DEFERRED,
        **extra,
    }
    response = image_store(installation, data)
    assert response.status_code == 200, response.text
    handle: str = response.json()["access_token"]
    return handle


def redeem(installation: Installation, handle: str) -> httpx.Response:
    return image_store(installation, {"grant_type": EXCHANGE, "subject_token": handle, "subject_token_type": DEFERRED})


def delegation_id(handle: str) -> str:
    return handle.removeprefix("chit_dd_").split(".", 1)[0]


def listed(chit: ChitServer, *args: str) -> list[dict[str, Any]]:
    delegations: list[dict[str, Any]] = chit.cli_ok("delegation", "list", *args, "--json").json()["delegations"]
    return delegations


def run(*args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_") and k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update({"COLUMNS": "120", "TERM": "xterm-256color", "CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    if terminal:
        env["FORCE_COLOR"] = "1"
    return subprocess.run([CHIT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_list_shows_a_users_delegations_as_json(installation: Installation) -> None:
    chit = installation.chit
    handle = defer(installation, "json-alice", job_id="nightly", expires_in="7200")
    other = defer(installation, "json-bob")
    assert redeem(installation, handle).status_code == 200
    user_id = next(
        u["id"] for u in chit.cli_ok("user", "list", "--json").json()["users"] if u["username"] == "json-alice"
    )

    [item] = listed(chit, "--user", "json-alice")
    assert item == {
        "id": delegation_id(handle),
        "user": "json-alice",
        "user_id": user_id,
        "service": "image-store",
        "scope": ["tagging:tags:write"],
        "job_id": "nightly",
        "created_at": item["created_at"],
        "expires_at": item["expires_at"],
        "revoked_at": None,
        "last_used_at": item["last_used_at"],
        "redemptions": 1,
        "state": "active",
    }
    assert item["created_at"].endswith("+00:00")
    assert item["last_used_at"] is not None
    everyone = {d["id"] for d in listed(chit)}
    assert {delegation_id(handle), delegation_id(other)} <= everyone
    out = chit.cli_ok("delegation", "list", "--json").stdout
    assert handle.split(".", 1)[1] not in out


def test_list_is_a_table_in_a_terminal_and_plain_lines_in_a_pipe(installation: Installation) -> None:
    chit = installation.chit
    handle = defer(installation, "table-carol", job_id="thumbs")
    dlg = delegation_id(handle)
    result = run("delegation", "list", "--user", "table-carol", *chit.location_args(), terminal=True)
    assert result.returncode == 0, result.stderr
    table = ANSI.sub("", result.stdout)
    for box in BOX:
        assert box in table, table
    assert max(len(line) for line in table.splitlines()) <= 120
    for heading in ("Delegation ID", "User", "Service", "Scope", "Job", "State"):
        assert heading in table, table
    for value in ("table-carol", "image-store", "thumbs", "active"):
        assert value in table, table

    result = run("delegation", "list", "--user", "table-carol", *chit.location_args())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not any(box in result.stdout for box in BOX)
    assert lines[0].split()[:2] == ["Delegation", "ID"]
    assert len(lines) == 2
    assert lines[1].split()[:4] == [dlg, "table-carol", "image-store", "tagging:tags:write"]


def test_revoke_ends_the_handle_once(installation: Installation) -> None:
    chit = installation.chit
    handle = defer(installation, "revoke-dan", job_id="cli-job")
    token = redeem(installation, handle).json()["access_token"]
    dlg = delegation_id(handle)

    assert chit.cli_ok("delegation", "revoke", dlg).stdout == f"Revoked delegation {dlg}\n"
    assert chit.cli_ok("delegation", "revoke", dlg).stdout == f"Delegation {dlg} was already revoked\n"

    refused = redeem(installation, handle)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    introspected = httpx.post(
        chit.url + "/oauth2/introspect", data={"token": token}, auth=("image-store", installation.secret), timeout=30
    )
    assert introspected.json() == {"active": False}
    [item] = listed(chit, "--user", "revoke-dan")
    assert item["state"] == "revoked"
    assert item["revoked_at"] is not None

    audit = chit.cli_ok("audit", "tail", "--type", "delegation.revoked", "-n", "1000", "--json").json()["events"]
    mine = [e for e in audit if e["detail"].get("delegation") == dlg]
    assert len(mine) == 1
    assert (mine[0]["actors"], mine[0]["detail"]["job_id"]) == (["operator"], "cli-job")


def test_unknown_ids_and_users_are_refused_in_one_line(chit: ChitServer) -> None:
    for args, message in [
        (("delegation", "revoke", "dlg_nosuchdelegation"), "chit: no delegation 'dlg_nosuchdelegation'"),
        (("delegation", "list", "--user", "nobody-here"), "chit: no user 'nobody-here'"),
    ]:
        result = chit.cli(*args)
        assert result.exit_code == 1, result.stdout
        assert result.stderr.strip().splitlines() == [message]
        assert result.stdout == ""


def test_the_group_alone_prints_its_help(tmp_path: Path) -> None:
    result = subprocess.run(
        [CHIT, "delegation"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: chit delegation" in result.stdout.replace("  ", " ")
    for command in ("list", "revoke"):
        assert command in result.stdout
    assert list(tmp_path.iterdir()) == []
