"""Precise messages (issue 14, part C): what a typo or a wrong input gets from ``chit``, as the exit
code and the exact first line on stderr; never a success, never a Python repr, never "tampered with"
for a typo.

The commands run in-process (``ChitServer.cli``) against one shared server; the usage error of
``audit verify`` runs once more as a real ``python -m chit`` process.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ChitServer, CliResult, ModuleServers

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
IMAGE_STORE = """
id = "image-store"
description = "Users' images"

[permissions]
"images:read" = "Read an image"
"images:write" = "Upload an image"

[roles]
viewer = ["images:read"]
owner = ["images:read", "images:write"]
"""


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("messages", manifests=[IMAGE_STORE])
    server.add_user("alice", "alice-password")
    return server


def first_error(result: CliResult) -> str:
    assert result.stderr, f"nothing on stderr (exit {result.exit_code}): {result.stdout}"
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr.splitlines()[0]


def assert_refused(result: CliResult, line: str, exit_code: int = 1) -> None:
    assert (result.exit_code, first_error(result)) == (exit_code, line), result.stderr


# chit:* permissions are a fixed set, with closest-name hints -------------------------------------


def test_a_misspelt_chit_permission_in_a_clients_scope_is_refused_with_the_closest_name(chit: ChitServer) -> None:
    assert_refused(
        chit.cli("client", "add", "gw-typo", "--scope", "chit:api-keys:exchnge", "--grant", TOKEN_EXCHANGE),
        "chit: chit:api-keys:exchnge: no such chit permission; did you mean chit:api-keys:exchange?",
    )
    chit.add_client("gw-typo")  # nothing was created: the name is still free


def test_an_unknown_chit_permission_in_a_role_is_refused_and_lists_chits_resources(chit: ChitServer) -> None:
    assert_refused(
        chit.cli("role", "create", "r2", "--permission", "chit:bogus:thing"),
        "chit: chit:bogus:thing: no such chit permission (chit:RESOURCE:ACTION, RESOURCE one of users, clients,"
        " services, roles, grants, admins, api-keys, sessions, keys, audit, delegations, revocations, service.ID)",
    )
    assert_refused(
        chit.cli("role", "create", "r2", "--permission", "chit:service.imagestore:admin"),
        "chit: chit:service.imagestore:admin: no registered service 'imagestore'; did you mean image-store?",
    )


@pytest.mark.parametrize(
    "permission", ["chit:audit:read", "chit:users:*", "chit:*:read", "chit:service.image-store:admin"]
)
def test_documented_chit_permissions_and_wildcards_over_them_are_accepted(chit: ChitServer, permission: str) -> None:
    name = "ok-" + permission.replace(":", "-").replace("*", "all")
    chit.cli_ok("role", "create", name, "--permission", permission)


def test_granting_a_misspelt_role_names_the_closest_roles(chit: ChitServer) -> None:
    assert_refused(
        chit.cli("grant", "alice", "image-store:owners"),
        "chit: no role 'image-store:owners'; did you mean image-store:owner?",
    )
    assert_refused(chit.cli("grant", "alice", "zzz-nothing-like-it"), "chit: no role 'zzz-nothing-like-it'")


def test_an_api_key_with_a_misspelt_permission_gets_the_closest_name_not_what_its_owner_holds(
    chit: ChitServer,
) -> None:
    chit.cli_ok("grant", "alice", "image-store:viewer")
    assert_refused(
        chit.cli("api-key", "create", "--owner", "alice", "--scope", "image-store:images:raed"),
        "chit: image-store:images:raed: service 'image-store' defines no such permission;"
        " did you mean image-store:images:read?",
    )
    # a defined permission the owner does not hold is still refused as before
    assert_refused(
        chit.cli("api-key", "create", "--owner", "alice", "--scope", "image-store:images:write"),
        "chit: an API key cannot carry more than its owner holds: image-store:images:write",
    )


def test_a_client_with_the_exchange_permission_needs_the_exchange_grant_and_is_told_so(chit: ChitServer) -> None:
    assert_refused(
        chit.cli("client", "add", "gw-no-grant", "--scope", "chit:api-keys:exchange"),
        "chit: chit:api-keys:exchange lets a client exchange API keys, which takes the token-exchange grant:"
        f" add --grant {TOKEN_EXCHANGE}",
    )
    created = chit.cli_ok(
        "client", "add", "gw-no-grant", "--scope", "chit:api-keys:exchange", "--grant", TOKEN_EXCHANGE, "--json"
    ).json()
    assert created["grant_types"] == [TOKEN_EXCHANGE]


# audit verify --anchor -----------------------------------------------------------------------------

ANCHOR_TYPO = (
    "chit: --anchor 'deadbeef' is not a head hash: expected the 64 lowercase hex characters"
    " that chit audit verify printed"
)


def test_a_malformed_anchor_is_a_usage_error_not_tampering(chit: ChitServer) -> None:
    assert_refused(chit.cli("audit", "verify", "--anchor", "deadbeef"), ANCHOR_TYPO, exit_code=2)
    upper = chit.cli_ok("audit", "verify", "--json").json()["head_hash"].upper()
    result = chit.cli("audit", "verify", "--anchor", upper)
    assert result.exit_code == 2, result.stderr
    assert "is not a head hash" in first_error(result)


def test_a_malformed_anchor_as_a_process(chit: ChitServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chit", "audit", "verify", "--anchor", "deadbeef", *chit.location_args()],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD},
        check=False,
    )
    assert_refused(CliResult(result.returncode, result.stdout, result.stderr), ANCHOR_TYPO, exit_code=2)


def test_a_well_formed_anchor_missing_from_the_chain_is_one_problem(chit: ChitServer) -> None:
    result = chit.cli("audit", "verify", "--anchor", "0" * 64)
    assert result.exit_code == 1
    assert "0" * 64 in first_error(result)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("chit: the audit log was tampered with: 1 problem in "), last


# token inspect -------------------------------------------------------------------------------------


def access_token(chit: ChitServer) -> str:
    response = httpx.post(
        chit.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": "alice", "password": "alice-password"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_token_inspect_shows_json_not_a_python_repr(chit: ChitServer) -> None:
    result = chit.cli_ok("token", "inspect", access_token(chit))
    header = next(line for line in result.stdout.splitlines() if line.startswith("header: "))
    assert json.loads(header.removeprefix("header: "))["typ"] in ("JWT", "at+jwt")
    aud = next(line for line in result.stdout.splitlines() if line.startswith("aud: "))
    assert json.loads(aud.removeprefix("aud: ")) == ["image-store"]
    assert "{'" not in result.stdout
    assert "['" not in result.stdout
    assert "signature: valid" in result.stdout


def test_token_inspect_exits_1_when_the_signature_does_not_hold(chit: ChitServer) -> None:
    head, body, signature = access_token(chit).split(".")
    flipped = base64.urlsafe_b64encode(bytes(b ^ 1 for b in base64.urlsafe_b64decode(signature + "=="))).rstrip(b"=")
    result = chit.cli("token", "inspect", f"{head}.{body}.{flipped.decode()}")
    assert result.exit_code == 1
    assert first_error(result).startswith("chit: the token's signature is invalid"), result.stderr
    assert "(not a token of this server's, or altered)" in first_error(result)
    assert "signature: invalid" in result.stdout  # what it says is still shown
    as_json = chit.cli("token", "inspect", f"{head}.{body}.{flipped.decode()}", "--json")
    assert as_json.exit_code == 1
    assert as_json.json()["signature"].startswith("invalid")


# manifests -----------------------------------------------------------------------------------------


def test_a_misspelt_manifest_section_names_its_line(chit: ChitServer, tmp_path: Path) -> None:
    manifest = tmp_path / "typo.toml"
    manifest.write_text(
        'id = "typo"\n\n[permissions]\n"a:read" = "Read"\n\n[role]\nviewer = ["a:read"]\n', encoding="utf-8"
    )
    assert_refused(
        chit.cli("service", "register", str(manifest)),
        f"chit: {manifest}:6: role: unknown key; did you mean roles?"
        " a manifest has id, description, permissions, roles, needs, on_behalf",
    )


def test_a_misspelt_chit_permission_in_a_manifests_needs_is_refused_with_the_closest_name(
    chit: ChitServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "needs-typo.toml"
    manifest.write_text(
        'id = "needs-typo"\n\n[permissions]\n"a:read" = "Read"\n\n[needs]\npermissions = ["chit:users:raed"]\n',
        encoding="utf-8",
    )
    assert_refused(
        chit.cli("service", "register", str(manifest)),
        "chit: chit:users:raed: no such chit permission; did you mean chit:users:read?",
    )
    assert "needs-typo" not in chit.cli_ok("service", "list", "--json").stdout  # nothing was registered
