"""What the CLI shows (issue 14): ``chit --version``, help when bare, every list as a ``rich`` table in a
terminal and as JSON with ``--json``, ``chit session revoke``, and ``GET /`` on the auth server.

The lists run the real ``chit`` executable as a subprocess; ``FORCE_COLOR`` makes rich treat its stdout
as a terminal, ``COLUMNS`` fixes the width.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import CHIT, ChitServer, ModuleServers, run_chit

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = ("┏", "┃", "┡", "│", "└")
MANIFEST = """
id = "warehouse"
description = "Shelves and boxes"

[permissions]
"boxes:read" = "Read a box"
"boxes:move" = "Move a box"
"""
PASSWORD = "list-user-password-1"


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("cli-lists", manifests=[MANIFEST])
    server.cli_ok("role", "create", "box-readers", "--permission", "warehouse:boxes:read")
    server.add_user("lister", PASSWORD, "--role", "box-readers")
    server.add_client("box-bot", "--scope", "warehouse:boxes:read")
    server.cli_ok("grant", "client:box-bot", "box-readers")
    server.cli_ok("api-key", "create", "--owner", "lister", "--scope", "warehouse:boxes:read")
    login(server, "lister")
    return server


def login(server: ChitServer, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = httpx.post(
        server.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def run_ok(server: ChitServer | None, *args: str, terminal: bool = False) -> str:
    location = server.location_args() if server else []
    result = run_chit(*args, *location, terminal=terminal)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


# (command, JSON key, keys every item has, names the table shows)
LISTS = [
    (["user", "list"], "users", {"id", "username", "roles", "disabled"}, ["admin", "lister", "box-readers"]),
    (["client", "list"], "clients", {"client_id", "id", "grant_types", "scope", "roles"}, ["box-bot", "chit-cli"]),
    (
        ["service", "list"],
        "services",
        {"id", "description", "permissions", "public_key"},
        ["warehouse", "warehouse:boxes:move"],
    ),
    (["role", "list"], "roles", {"name", "service", "permissions"}, ["box-readers", "warehouse:boxes:read"]),
    (["role", "grants"], "grants", {"principal", "type", "name", "role"}, ["box-readers", "box-bot", "lister"]),
    (["session", "list"], "sessions", {"id", "username", "client_id", "scope", "active"}, ["lister", "chit-cli"]),
    (["api-key", "list"], "api_keys", {"id", "owner", "owner_id", "scope"}, ["user:lister"]),
]


@pytest.mark.parametrize(("command", "key", "keys", "names"), LISTS, ids=[" ".join(c[0]) for c in LISTS])
def test_each_list_is_a_table_in_a_terminal(
    chit: ChitServer, command: list[str], key: str, keys: set[str], names: list[str]
) -> None:
    table = ANSI.sub("", run_ok(chit, *command, terminal=True))
    for box in BOX:
        assert box in table, table
    assert max(len(line) for line in table.splitlines()) <= 120
    for name in names:
        assert name in table, (name, table)


@pytest.mark.parametrize(("command", "key", "keys", "names"), LISTS, ids=[" ".join(c[0]) for c in LISTS])
def test_each_list_is_json_with_json(
    chit: ChitServer, command: list[str], key: str, keys: set[str], names: list[str]
) -> None:
    out = run_ok(chit, *command, "--json", terminal=True)  # JSON even in a terminal
    assert "\x1b[" not in out
    items = json.loads(out)[key]
    assert items, out
    for item in items:
        assert keys <= set(item), item
    text = json.dumps(items)
    for name in names:
        assert name in text


@pytest.mark.parametrize(("command", "key", "keys", "names"), LISTS, ids=[" ".join(c[0]) for c in LISTS])
def test_each_list_is_plain_lines_in_a_pipe(
    chit: ChitServer, command: list[str], key: str, keys: set[str], names: list[str]
) -> None:
    out = run_ok(chit, *command)
    assert not any(box in out for box in BOX)
    assert "\x1b[" not in out
    for name in names:
        assert name in out


def test_api_keys_show_their_owners_name(chit: ChitServer) -> None:
    keys = chit.cli_ok("api-key", "list", "--json").json()["api_keys"]
    lister = chit.cli_ok("user", "list", "--json").json()["users"]
    lister_id = next(u["id"] for u in lister if u["username"] == "lister")
    mine = [k for k in keys if k["owner_id"] == lister_id]
    assert mine
    assert all(k["owner"] == "user:lister" for k in mine)


def test_grants_filter_by_role_and_principal(chit: ChitServer) -> None:
    grants = chit.cli_ok("role", "grants", "--role", "box-readers", "--json").json()["grants"]
    assert sorted(g["principal"] for g in grants) == ["client:box-bot", "user:lister"]
    grants = chit.cli_ok("role", "grants", "--principal", "user:lister", "--json").json()["grants"]
    assert [g["role"] for g in grants] == ["box-readers"]


def test_session_revoke_ends_the_refresh_token(chit: ChitServer) -> None:
    chit.add_user("session-user", PASSWORD)
    tokens = login(chit, "session-user")
    sessions = chit.cli_ok("session", "list", "--user", "session-user", "--json").json()["sessions"]
    assert len(sessions) == 1
    session = sessions[0]
    assert (session["username"], session["client_id"], session["active"]) == ("session-user", "chit-cli", True)

    result = chit.cli_ok("session", "revoke", session["id"])
    assert result.stdout.strip() == f"Revoked session {session['id']}"
    refreshed = httpx.post(
        chit.token_url,
        data={"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": tokens["refresh_token"]},
        timeout=30,
    )
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"

    assert chit.cli_ok("session", "list", "--user", "session-user", "--json").json()["sessions"] == []
    ended = chit.cli_ok("session", "list", "--user", "session-user", "--all", "--json").json()["sessions"]
    assert [(s["id"], s["active"]) for s in ended] == [(session["id"], False)]
    assert ended[0]["revoked_at"] is not None
    again = chit.cli_ok("session", "revoke", session["id"]).stdout.strip()
    assert again == f"Session {session['id']} was already revoked"


def test_session_revoke_of_an_unknown_session_is_refused(chit: ChitServer) -> None:
    result = chit.cli("session", "revoke", "no-such-session")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["chit: no session 'no-such-session' that this token could revoke"]


def test_session_list_of_an_unknown_user_is_refused(chit: ChitServer) -> None:
    result = chit.cli("session", "list", "--user", "nobody-here")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["chit: no user 'nobody-here'"]


# version and help --------------------------------------------------------------------------------


def test_version() -> None:
    from chit import __version__

    result = run_chit("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"chit {__version__}\n", "")


@pytest.mark.parametrize("group", [[], ["user"], ["client"], ["role"], ["service"], ["session"], ["api-key"]])
def test_bare_commands_print_help_and_exit_0(group: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [CHIT, *group], capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, "COLUMNS": "100"}
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: chit {' '.join(group)}".rstrip() in result.stdout.replace("  ", " ")
    assert "Commands" in result.stdout
    assert list(tmp_path.iterdir()) == []  # help creates nothing


@pytest.mark.parametrize(
    "command", [["--help"], ["user", "add", "--help"], ["client", "add", "--help"], ["session", "list", "--help"]]
)
def test_help_has_no_type_column(command: list[str]) -> None:
    result = run_chit(*command)
    assert result.returncode == 0
    for type_name in ("<bool>", "<str>", "<list[str]>", "<path>", "TEXT", "BOOLEAN"):
        assert type_name not in result.stdout, (type_name, result.stdout)


def test_help_does_not_break_sentences() -> None:
    """A docstring's line breaks are not the help's: the serve summary reads as one paragraph."""
    out = run_chit("service", "register", "--help").stdout
    words = " ".join(line.strip(" │") for line in out.splitlines())
    assert "Creates the service's client for client_credentials and prints its secret once" in " ".join(words.split())


def test_usage_names_arguments_as_the_contract_does() -> None:
    assert "Usage: chit grant [OPTIONS] PRINCIPAL ROLE" in run_chit("grant", "--help").stdout


# GET / -------------------------------------------------------------------------------------------


def test_root_points_to_discovery_and_docs(chit: ChitServer) -> None:
    from chit import __version__

    response = httpx.get(chit.url + "/", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "name": "chit",
        "version": __version__,
        "issuer": chit.url,
        "discovery": chit.url + "/.well-known/openid-configuration",
        "docs": chit.url + "/docs",
    }
    assert httpx.get(body["discovery"], timeout=30).json()["issuer"] == chit.url
    assert httpx.get(body["docs"], timeout=30).status_code == 200
