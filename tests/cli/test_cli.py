"""The ``chit`` command's contract (DESIGN §4): forms, exit codes, ``--json`` output, and effects on a
running server.

Most tests share one real server (module scope) and use names of their own; commands run in-process
through ``ChitServer.cli`` and, for exit codes, once more as real ``python -m chit`` processes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ChitServer, CliResult, ModuleServers, free_port, run_cli, stop_process

JWKS = "/.well-known/jwks.json"
# Only permissions that a registered service defines can be granted: the tests use these two.
MANIFESTS = {
    "inventory": """
id = "inventory"
description = "Items in stock"

[permissions]
"items:read" = "Read an item"
"items:write" = "Change an item"
"stock:read" = "Read stock levels"
""",
    "shipping": """
id = "shipping"
description = "Parcels"

[permissions]
"parcels:read" = "Read a parcel"
"parcels:send" = "Send a parcel"
""",
}


@pytest.fixture(scope="module")
def shared(module_server: ModuleServers) -> ChitServer:
    return module_server("cli", manifests=MANIFESTS.values())


def login(server: ChitServer, username: str, password: str) -> httpx.Response:
    return httpx.post(
        server.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
        timeout=30,
    )


def client_token(server: ChitServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(server.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret), timeout=30)


def scope(response: httpx.Response) -> set[str]:
    """The granted scope of a token response, as a set (its order carries no meaning)."""
    assert response.status_code == 200, response.text
    value: str = response.json()["scope"]
    return set(value.split())


def assert_refused(result: CliResult, *fragments: str) -> None:
    """Exit 1 with exactly one line of reason on stderr."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def assert_usage_error(result: CliResult, *fragments: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    text = " ".join(result.stderr.split())  # the usage box wraps lines
    for fragment in fragments:
        assert fragment in text, result.stderr


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def jwks_kids(server: ChitServer) -> set[str]:
    return {k["kid"] for k in httpx.get(server.url + JWKS, timeout=30).json()["keys"]}


# exit codes through a real process --------------------------------------------------------------


def test_exit_codes_of_a_real_chit_process(shared: ChitServer) -> None:
    shared.add_user("proc-existing", "a-long-password")
    env = {k: v for k, v in os.environ.items() if k != "CHIT_ADMIN_PASSWORD"}
    where = shared.location_args()
    commands = {
        0: ["user", "add", "proc-new", "--password-stdin", *where],
        1: ["user", "add", "proc-existing", "--password-stdin", *where],
        2: ["user", "add", "proc-other", "--no-such-option", *where],
    }
    processes = {
        code: subprocess.Popen(
            [sys.executable, "-m", "chit", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for code, args in commands.items()
    }
    outputs = {code: p.communicate(b"a-long-password\n", timeout=60) for code, p in processes.items()}
    for code, p in processes.items():
        assert p.returncode == code, (code, outputs[code])
    assert b"Created user proc-new" in outputs[0][0]
    assert outputs[1][1].decode().strip() == "chit: user 'proc-existing' already exists"
    assert b"No such option" in outputs[2][1]
    assert login(shared, "proc-new", "a-long-password").status_code == 200
    assert login(shared, "proc-other", "a-long-password").status_code == 400


# usage errors (exit 2) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["user", "add", "u1", "--bogus"], "No such option"),
        (["role", "create", "r-bad", "--permission", "BAD"], "expected service:resource:action"),
        (["role", "create", "r-bad", "--permission", "*:images:read"], "service segment cannot be '*'"),
        (["role", "create", "r-bad"], "--permission"),
        (["client", "add", "c-bad", "--scope", "svc:Images:read"], "the resource segment 'Images'"),
        (["client", "add", "c-bad", "--grant", "implicit"], "unknown grant 'implicit'"),
        (["client", "add", "Not_A_Valid_ID!"], "a client id is"),
        (["user", "add", "bad name"], "a username is"),
        (["grant", "only-one-argument"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2(shared: ChitServer, args: list[str], fragment: str) -> None:
    assert_usage_error(shared.cli(*args), fragment)


def test_a_usage_error_changes_nothing(shared: ChitServer) -> None:
    assert_usage_error(shared.cli("client", "add", "c-half", "--scope", "inventory:items:read", "--scope", "BAD"))
    # the id is still free: nothing was written
    assert shared.add_client("c-half", "--scope", "inventory:items:read")["client_id"] == "c-half"


# users -------------------------------------------------------------------------------------------


def test_user_add_with_password_stdin_logs_in(shared: ChitServer) -> None:
    result = shared.cli_ok("user", "add", "Stdin-User", "--password-stdin", "--json", input="pass phrase with spaces\n")
    data = result.json()
    assert data["username"] == "Stdin-User"
    assert data["id"].startswith("usr_")
    assert data["roles"] == []
    assert "password" not in data
    assert "pass phrase" not in result.stdout + result.stderr
    assert login(shared, "Stdin-User", "pass phrase with spaces").status_code == 200
    assert login(shared, "Stdin-User", "pass phrase with spaces\n").status_code == 400


def test_user_add_generates_a_password_printed_once(shared: ChitServer) -> None:
    human = shared.cli_ok("user", "add", "gen-human")
    match = re.search(r"^password: (\S+)$", human.stdout, re.MULTILINE)
    assert match, human.stdout
    password = match.group(1)
    assert "shown once" in human.stdout
    assert human.stdout.count(password) == 1
    assert login(shared, "gen-human", password).status_code == 200

    as_json = shared.cli_ok("user", "add", "gen-json", "--json").json()
    assert len(as_json["password"]) >= 16
    assert as_json["password"] != password
    assert login(shared, "gen-json", as_json["password"]).status_code == 200

    # never stored: no file of the data directory holds either password
    assert files_containing(shared.data_dir, password) == []
    assert files_containing(shared.data_dir, as_json["password"]) == []


def test_user_add_refuses_a_short_password(shared: ChitServer) -> None:
    assert_refused(shared.cli("user", "add", "shorty", "--password-stdin", input="short\n"), "at least")
    assert login(shared, "shorty", "short").status_code == 400
    shared.add_user("shorty", "long-enough-now")  # nothing was created


def test_duplicate_user_is_refused_with_one_line(shared: ChitServer) -> None:
    shared.add_user("dupe-user", "first-password")
    assert_refused(
        shared.cli("user", "add", "DUPE-user", "--password-stdin", input="second-password\n"),
        "already exists",
    )
    assert login(shared, "dupe-user", "first-password").status_code == 200
    assert login(shared, "dupe-user", "second-password").status_code == 400


def test_user_add_with_an_unknown_role_is_refused_and_creates_nothing(shared: ChitServer) -> None:
    result = shared.cli("user", "add", "roleless", "--password-stdin", "--role", "no-such-role", input="pw-12345678\n")
    assert_refused(result, "no role 'no-such-role'")
    assert login(shared, "roleless", "pw-12345678").status_code == 400
    shared.add_user("roleless", "pw-12345678")  # the name is still free
    assert login(shared, "roleless", "pw-12345678").status_code == 200


def test_user_add_with_roles_grants_them(shared: ChitServer) -> None:
    shared.cli_ok("role", "create", "ua-reader", "--permission", "inventory:items:read")
    data = shared.add_user("ua-user", "ua-password", "--role", "ua-reader")
    assert data["roles"] == ["ua-reader"]
    r = login(shared, "ua-user", "ua-password")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "inventory:items:read"


def test_user_disable_takes_effect_on_the_next_login(shared: ChitServer) -> None:
    shared.add_user("to-disable", "disable-me-pw")
    assert login(shared, "to-disable", "disable-me-pw").status_code == 200
    wrong = login(shared, "to-disable", "not-the-password")

    result = shared.cli_ok("user", "disable", "to-disable")
    assert "to-disable" in result.stdout
    refused = login(shared, "to-disable", "disable-me-pw")
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "invalid username or password"}
    assert refused.json() == wrong.json()  # same answer as a wrong password

    shared.cli_ok("user", "enable", "to-disable")
    assert login(shared, "to-disable", "disable-me-pw").status_code == 200


def test_user_disable_of_an_unknown_user_is_refused(shared: ChitServer) -> None:
    assert_refused(shared.cli("user", "disable", "ghost-user"), "no user 'ghost-user'")


# clients -----------------------------------------------------------------------------------------


def test_client_add_json_and_the_secret_works(shared: ChitServer) -> None:
    data = shared.add_client("json-svc", "--scope", "inventory:stock:read", "--scope", "inventory:stock:read")
    assert set(data) == {"client_id", "client_secret", "grant_types", "scope", "public"}
    assert data["client_id"] == "json-svc"
    assert isinstance(data["client_secret"], str)
    assert len(data["client_secret"]) >= 32
    assert data["grant_types"] == ["client_credentials"]
    assert data["scope"] == ["inventory:stock:read"]
    assert data["public"] is False
    r = client_token(shared, "json-svc", data["client_secret"])
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "inventory:stock:read"


def test_client_secret_is_shown_once_and_never_retrievable(shared: ChitServer) -> None:
    human = shared.cli_ok("client", "add", "once-svc")
    match = re.search(r"^client_secret: (\S+)$", human.stdout, re.MULTILINE)
    assert match, human.stdout
    secret = match.group(1)
    assert "shown once" in human.stdout
    assert client_token(shared, "once-svc", secret).status_code == 200
    again = shared.cli("client", "add", "once-svc", "--json")
    assert_refused(again, "already exists")
    assert secret not in again.stdout + again.stderr
    assert again.stdout == ""
    assert files_containing(shared.data_dir, secret) == []
    assert shared.log_path is not None
    assert secret not in shared.log()


def test_public_client_has_no_secret(shared: ChitServer) -> None:
    data = shared.add_client("pub-app", "--public", "--grant", "password", "--grant", "refresh_token")
    assert data["public"] is True
    assert data["client_secret"] is None
    assert data["grant_types"] == ["password", "refresh_token"]
    assert data["scope"] is None
    human = shared.cli_ok("client", "add", "pub-app-2", "--public", "--grant", "password")
    assert "client_secret" not in human.stdout


def test_grant_password_alone_allow_lists_only_it(shared: ChitServer) -> None:
    data = shared.add_client("pw-only", "--grant", "password")
    assert data["grant_types"] == ["password"]
    r = client_token(shared, "pw-only", data["client_secret"])
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"


def test_public_client_credentials_client_is_refused(shared: ChitServer) -> None:
    assert_refused(shared.cli("client", "add", "pub-cc", "--public"), "public client")
    shared.add_client("pub-cc")  # nothing was created


def test_duplicate_client_is_refused_with_one_line(shared: ChitServer) -> None:
    shared.add_client("dupe-svc")
    assert_refused(shared.cli("client", "add", "dupe-svc"), "client 'dupe-svc' already exists")


# roles and grants --------------------------------------------------------------------------------


def test_role_create_json(shared: ChitServer) -> None:
    result = shared.cli_ok(
        "role",
        "create",
        "rc-role",
        "--permission",
        "shipping:parcels:read",
        "--permission",
        "inventory:items:*",
        "--json",
    )
    assert result.json() == {"name": "rc-role", "permissions": ["inventory:items:*", "shipping:parcels:read"]}
    assert_refused(shared.cli("role", "create", "rc-role", "--permission", "shipping:parcels:send"), "already exists")


def test_a_permission_no_registered_service_defines_is_refused_with_the_closest_names(
    shared: ChitServer,
) -> None:
    typo = shared.cli("role", "create", "typo-role", "--permission", "inventory:itmes:read")
    assert_refused(typo, "inventory:itmes:read", "inventory:items:read")
    unknown = shared.cli("client", "add", "typo-svc", "--scope", "inventry:items:read")
    assert_refused(unknown, "inventry", "inventory")
    assert shared.cli("grant", "user:admin", "typo-role").exit_code == 1  # the role was not created
    shared.add_client("typo-svc")  # nor the client


def test_service_register_refuses_a_role_without_permissions_naming_it(shared: ChitServer, tmp_path: Path) -> None:
    manifest = tmp_path / "shelf.toml"
    manifest.write_text(
        'id = "shelf"\ndescription = "Books"\n[permissions]\n"books:read" = "Read a book"\n'
        '[roles]\nreader = ["books:read"]\nplaceholder = []\n',
        encoding="utf-8",
    )
    result = shared.cli("service", "register", str(manifest))
    assert_refused(result, f"{manifest}:7: roles.placeholder: a role needs at least one permission")
    assert "shelf" not in {s["id"] for s in shared.cli_ok("service", "list", "--json").json()["services"]}


def test_grant_to_user_by_prefix_and_bare_name(shared: ChitServer) -> None:
    shared.cli_ok("role", "create", "gu-reader", "--permission", "inventory:items:read")
    shared.cli_ok("role", "create", "gu-writer", "--permission", "inventory:items:write")
    shared.add_user("gu-user", "gu-password")
    assert scope(login(shared, "gu-user", "gu-password")) == set()

    result = shared.cli_ok("grant", "user:gu-user", "gu-reader")
    assert "Granted" in result.stdout
    assert scope(login(shared, "gu-user", "gu-password")) == {"inventory:items:read"}
    again = shared.cli_ok("grant", "user:gu-user", "gu-reader")
    assert "already holds" in again.stdout

    shared.cli_ok("grant", "gu-user", "gu-writer")
    assert scope(login(shared, "gu-user", "gu-password")) == {"inventory:items:read", "inventory:items:write"}


def test_grant_to_client(shared: ChitServer) -> None:
    shared.cli_ok("role", "create", "gc-role", "--permission", "inventory:stock:read")
    client = shared.add_client("gc-svc", "--scope", "shipping:parcels:read")
    assert scope(client_token(shared, "gc-svc", client["client_secret"])) == {"shipping:parcels:read"}
    shared.cli_ok("grant", "client:gc-svc", "gc-role")
    assert scope(client_token(shared, "gc-svc", client["client_secret"])) == {
        "shipping:parcels:read",
        "inventory:stock:read",
    }


def test_grant_to_an_ambiguous_bare_name_is_refused(shared: ChitServer) -> None:
    shared.cli_ok("role", "create", "amb-role", "--permission", "inventory:items:read")
    shared.add_user("both", "both-password")
    client = shared.add_client("both")
    result = shared.cli("grant", "both", "amb-role")
    assert_refused(result, "user:both", "client:both")
    assert scope(login(shared, "both", "both-password")) == set()  # nothing granted
    shared.cli_ok("grant", "user:both", "amb-role")
    assert scope(login(shared, "both", "both-password")) == {"inventory:items:read"}
    assert scope(client_token(shared, "both", client["client_secret"])) == set()


def test_grant_refusals(shared: ChitServer) -> None:
    shared.cli_ok("role", "create", "gr-role", "--permission", "inventory:items:read")
    shared.add_user("gr-user", "gr-password")
    assert_refused(shared.cli("grant", "nobody-at-all", "gr-role"), "nobody-at-all")
    assert_refused(shared.cli("grant", "user:nobody-at-all", "gr-role"), "nobody-at-all")
    assert_refused(shared.cli("grant", "client:gr-user", "gr-role"), "gr-user")
    assert_refused(shared.cli("grant", "user:gr-user", "no-such-role"), "no role 'no-such-role'")
    assert scope(login(shared, "gr-user", "gr-password")) == set()


# token inspect -----------------------------------------------------------------------------------


def test_token_inspect_shows_a_real_token(shared: ChitServer) -> None:
    r = login(shared, "admin", ADMIN_PASSWORD)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    claims = jwt_part(token, 1)

    data = shared.cli_ok("token", "inspect", token, "--json").json()
    assert data["kind"] == "jwt"
    assert data["signature"] == "valid"
    assert data["expired"] is False
    assert data["revoked"] is False
    assert data["claims"] == claims
    assert data["claims"]["iss"] == shared.url
    assert data["claims"]["scope"] == "chit:*:*"
    assert data["header"]["typ"] == "at+jwt"
    assert data["header"]["kid"] in jwks_kids(shared)

    human = shared.cli_ok("token", "inspect", token).stdout
    assert f"sub: {claims['sub']}" in human
    assert "scope: chit:*:*" in human
    assert "signature: valid" in human
    assert re.search(r"expires in \d+ s", human)


def test_token_inspect_flags_a_tampered_token(shared: ChitServer) -> None:
    token = login(shared, "admin", ADMIN_PASSWORD).json()["access_token"]
    header, _payload, signature = token.split(".")
    claims = jwt_part(token, 1)
    claims["scope"] = "chit:*:* everything:*:*"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{forged}.{signature}"

    data = shared.cli("token", "inspect", tampered, "--json").json()
    assert data["signature"].startswith("invalid")
    assert data["claims"]["scope"] == "chit:*:* everything:*:*"
    assert data["revoked"] is False
    human = shared.cli("token", "inspect", tampered).stdout
    assert "signature: invalid" in human


@pytest.mark.parametrize("garbage", ["garbage", "not.a.jwt", "eyJ.eyJ.sig", ""])
def test_token_inspect_of_garbage_is_refused(shared: ChitServer, garbage: str) -> None:
    result = shared.cli("token", "inspect", garbage)
    assert_refused(result)
    assert result.stdout == ""


# keys rotate -------------------------------------------------------------------------------------


def wait_for_kid(server: ChitServer, kid: str, seconds: float = 2.5) -> set[str]:
    deadline = time.monotonic() + seconds
    while True:
        kids = jwks_kids(server)
        if kid in kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.1)


def test_keys_rotate_publishes_at_once_and_signs_later(shared: ChitServer) -> None:
    before = jwks_kids(shared)
    started = datetime.now(UTC)
    data = shared.cli_ok("keys", "rotate", "--json").json()
    assert set(data) == {"kid", "alg", "signs_from", "previous_kid", "biscuit_root_key_id", "biscuit_public_key"}
    assert data["alg"] == "RS256"
    assert data["previous_kid"] in before
    assert data["kid"] not in before
    signs_from = datetime.fromisoformat(data["signs_from"])
    assert signs_from.tzinfo is not None
    assert 290 <= (signs_from - started).total_seconds() <= 310  # after the JWKS max-age (300 s)
    # stored in whole seconds, rounded up: never a moment before the max-age has passed
    assert signs_from.microsecond == 0
    assert signs_from >= started + timedelta(seconds=300)

    kids = wait_for_kid(shared, data["kid"])
    assert data["kid"] in kids
    assert data["previous_kid"] in kids  # the old key stays published
    token = login(shared, "admin", ADMIN_PASSWORD).json()["access_token"]
    assert jwt_part(token, 0)["kid"] == data["previous_kid"]  # the new one does not sign yet

    human = shared.cli_ok("keys", "rotate", "--alg", "ES256").stdout
    assert "Published key" in human
    assert "ES256" in human


def test_keys_rotate_now_signs_with_the_new_key(shared: ChitServer) -> None:
    started = datetime.now(UTC)
    data = shared.cli_ok("keys", "rotate", "--now", "--json").json()
    assert abs((datetime.fromisoformat(data["signs_from"]) - started).total_seconds()) < 5
    assert data["kid"] in wait_for_kid(shared, data["kid"])
    deadline = time.monotonic() + 2.5
    while True:
        kid = jwt_part(login(shared, "admin", ADMIN_PASSWORD).json()["access_token"], 0)["kid"]
        if kid == data["kid"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert kid == data["kid"]


def test_keys_rotate_with_an_unknown_algorithm_is_a_usage_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-created"
    result = run_cli("keys", "rotate", "--alg", "HS256", "--data-dir", str(data_dir))
    assert_usage_error(result, "unsupported signing algorithm 'HS256'")
    assert not data_dir.exists()  # refused before anything was bootstrapped


# chit serve --------------------------------------------------------------------------------------


def start_serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CHIT_ADMIN_PASSWORD"}
    cmd = [sys.executable, "-m", "chit", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError("chit serve did not come up:\n" + log.read_text())


def test_serve_on_an_empty_data_dir_prints_a_generated_admin_password_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ChitServer(data_dir, free_port())
    first_log = tmp_path / "first.log"
    process = start_serve(data_dir, server.port, first_log)
    try:
        output = first_log.read_text()
        found = re.findall(r"Created the super admin 'admin' with password: (\S+)", output)
        assert len(found) == 1, output
        password = found[0]
        assert output.count(password) == 1
        r = login(server, "admin", password)
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "chit:*:*"
        assert login(server, "admin", ADMIN_PASSWORD).status_code == 400
    finally:
        stop_process(process)
    assert files_containing(data_dir, password) == []

    second_log = tmp_path / "second.log"
    process = start_serve(data_dir, server.port, second_log)
    try:
        assert "password" not in second_log.read_text()
        assert login(server, "admin", password).status_code == 200
    finally:
        stop_process(process)


# PostgreSQL --------------------------------------------------------------------------------------


def test_cli_and_server_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    server = ChitServer(tmp_path / "data", free_port(), database_url=postgres_url)
    server.start()
    try:
        user = server.add_user("pg-user", "pg-password")
        assert user["username"] == "pg-user"
        r = login(server, "pg-user", "pg-password")
        assert r.status_code == 200, r.text
        assert jwt_part(r.json()["access_token"], 1)["sub"] == user["id"]
        assert_refused(server.cli("user", "add", "PG-USER", "--password-stdin", input="another-pw\n"), "already exists")
        assert not (server.data_dir / "chit.db").exists()  # the users live in PostgreSQL
    finally:
        server.stop()


def test_a_nul_given_to_the_cli_is_refused_in_one_line_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """PostgreSQL cannot store NUL: what carries one to a command (stdin, a manifest file, an argument
    of an in-process call) is refused by the layer the admin API shares, never a database error."""
    server = ChitServer(tmp_path / "data", free_port(), database_url=postgres_url)
    server.cli_ok("init")
    added = server.cli("user", "add", "nul-user", "--password-stdin", input="pass\x00word-long\n")
    assert_refused(added, "chit: password contains control characters")
    assert_refused(server.cli("grant", "a\x00b", "chit:super-admin"), "chit: principal contains control characters")
    manifest = tmp_path / "nul.toml"
    manifest.write_text('id = "nul"\ndescription = "a\\u0000b"\n', encoding="utf-8")
    assert_refused(server.cli("service", "register", str(manifest)), f"{manifest}:2: description: contains a NUL")
    assert [u["username"] for u in server.cli_ok("user", "list", "--json").json()["users"]] == ["admin"]
    assert server.cli_ok("service", "list", "--json").json()["services"] == []
