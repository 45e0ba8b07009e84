"""``chit delegation list [--user NAME] [--json]`` and ``chit delegation revoke ID``: deferred
delegations made over HTTP by a registered service, listed and revoked by the operator.

The table runs the real ``chit`` executable as a subprocess; ``FORCE_COLOR`` makes rich treat its stdout
as a terminal, ``COLUMNS`` fixes the width.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CHIT,
    ChitServer,
    ModuleServers,
    TaggingInstallation,
    add_tagging_user,
    audit_events,
    delegation_id,
    run_chit,
    tagging_installation,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = ("┏", "┃", "┡", "│", "└")
PASSWORD = "delegation-cli-password"


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers) -> TaggingInstallation:
    return tagging_installation(module_server, "delegation-cli")


@pytest.fixture(scope="module")
def chit(installation: TaggingInstallation) -> ChitServer:
    return installation.chit


def defer(installation: TaggingInstallation, username: str, **extra: str) -> str:
    """A deferred delegation of a new user to image-store; its handle."""
    _, token = add_tagging_user(installation.chit, username, PASSWORD)
    return installation.image_store.deferred_handle(token, **extra)


def listed(chit: ChitServer, *args: str) -> list[dict[str, Any]]:
    delegations: list[dict[str, Any]] = chit.cli_ok("delegation", "list", *args, "--json").json()["delegations"]
    return delegations


def test_list_shows_a_users_delegations_as_json(installation: TaggingInstallation) -> None:
    chit = installation.chit
    handle = defer(installation, "json-alice", job_id="nightly", expires_in="7200")
    other = defer(installation, "json-bob")
    assert installation.image_store.redeem(handle).status_code == 200
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


def test_list_is_a_table_in_a_terminal_and_plain_lines_in_a_pipe(installation: TaggingInstallation) -> None:
    chit = installation.chit
    handle = defer(installation, "table-carol", job_id="thumbs")
    dlg = delegation_id(handle)
    result = run_chit("delegation", "list", "--user", "table-carol", *chit.location_args(), terminal=True)
    assert result.returncode == 0, result.stderr
    table = ANSI.sub("", result.stdout)
    for box in BOX:
        assert box in table, table
    assert max(len(line) for line in table.splitlines()) <= 120
    for heading in ("Delegation ID", "User", "Service", "Scope", "Job", "State"):
        assert heading in table, table
    for value in ("table-carol", "image-store", "thumbs", "active"):
        assert value in table, table

    result = run_chit("delegation", "list", "--user", "table-carol", *chit.location_args())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not any(box in result.stdout for box in BOX)
    assert lines[0].split()[:2] == ["Delegation", "ID"]
    assert len(lines) == 2
    assert lines[1].split()[:4] == [dlg, "table-carol", "image-store", "tagging:tags:write"]


def test_revoke_ends_the_handle_once(installation: TaggingInstallation) -> None:
    chit = installation.chit
    handle = defer(installation, "revoke-dan", job_id="cli-job")
    token = installation.image_store.redeem(handle).json()["access_token"]
    dlg = delegation_id(handle)

    assert chit.cli_ok("delegation", "revoke", dlg).stdout == f"Revoked delegation {dlg}\n"
    assert chit.cli_ok("delegation", "revoke", dlg).stdout == f"Delegation {dlg} was already revoked\n"

    refused = installation.image_store.redeem(handle)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert installation.image_store.introspect(token) == {"active": False}
    [item] = listed(chit, "--user", "revoke-dan")
    assert item["state"] == "revoked"
    assert item["revoked_at"] is not None

    mine = [e for e in audit_events(chit, "delegation.revoked") if e["detail"].get("delegation") == dlg]
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
