"""The service registry over the CLI and a real server (DESIGN §4, "Service manifest"; issue 3):
``chit service register`` creates the service's client, is a no-op on an unchanged manifest, applies
updates, refuses to drop what someone still holds, and refuses permissions nobody defines.

One server for the module; every test registers services of its own (unique ids).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ROOT, ChitServer, CliResult, ModuleServers

from chit.storage.engine import create_database_engine, sqlite_url
from chit.storage.sql.store import Store

PHOTOS = ROOT / "examples" / "photos"


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("registry")


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    return tmp_path


def manifest(directory: Path, service_id: str, body: str, *, name: str | None = None) -> Path:
    path = directory / f"{name or service_id}.toml"
    path.write_text(f'id = "{service_id}"\ndescription = "{service_id} (test)"\n{body}', encoding="utf-8")
    return path


@contextmanager
def registry(chit: ChitServer) -> Iterator[Store]:
    """The server's own database, read directly."""
    engine = create_database_engine(sqlite_url(chit.data_dir))
    try:
        yield Store(engine)
    finally:
        engine.dispose()


def audit_count(chit: ChitServer, type: str | None = None) -> int:
    """How many events the audit log holds: changes only, or only those of ``type``."""
    events = chit.cli_ok("audit", "tail", "--json", "-n", "10000").json()["events"]
    if type is None:
        return sum(1 for e in events if e["type"] != "admin.refused")
    return sum(1 for e in events if e["type"] == type)


def assert_refused(result: CliResult, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def login(chit: ChitServer, username: str, password: str) -> httpx.Response:
    return httpx.post(
        chit.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
        timeout=30,
    )


def client_token(chit: ChitServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(chit.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret), timeout=30)


def claims(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    payload = response.json()["access_token"].split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def scope(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return set(response.json()["scope"].split())


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


# registering creates the service's client ----------------------------------------------------------


def test_register_the_photo_example_creates_each_services_client(chit: ChitServer) -> None:
    tagging = chit.cli_ok("service", "register", str(PHOTOS / "tagging.toml"), "--json").json()
    assert tagging["service"] == "tagging"
    assert tagging["client_id"] == "tagging"
    assert (tagging["created"], tagging["changed"]) == (True, True)
    assert tagging["permissions"] == ["tagging:tags:read", "tagging:tags:write"]
    assert tagging["roles"] == ["tagging:editor", "tagging:reader"]
    secret = tagging["client_secret"]
    assert isinstance(secret, str)
    assert len(secret) >= 32

    human = chit.cli_ok("service", "register", str(PHOTOS / "image-store.toml"))
    assert "Registered service image-store: 5 permissions, 3 roles" in human.stdout
    match = re.search(r"^client_secret: (\S+)$", human.stdout, re.MULTILINE)
    assert match, human.stdout
    assert "(shown once)" in human.stdout
    image_store_secret = match.group(1)

    # each service account's token carries exactly its [needs]; aud names the services needed
    token = claims(client_token(chit, "tagging", secret))
    assert set(token["scope"].split()) == {"image-store:images:read", "image-store:images:read-any"}
    assert token["aud"] == ["image-store"]
    assert token["client_id"] == "tagging"
    token = claims(client_token(chit, "image-store", image_store_secret))
    assert token["scope"] == "tagging:tags:read"
    assert token["aud"] == ["tagging"]

    listed = {s["id"]: s for s in chit.cli_ok("service", "list", "--json").json()["services"]}
    assert listed["tagging"]["permissions"] == ["tagging:tags:read", "tagging:tags:write"]
    assert listed["image-store"]["on_behalf"] == ["image-store:images:write", "tagging:tags:write"]
    assert listed["image-store"]["deferred"] == ["image-store:images:write", "tagging:tags:write"]
    listing = chit.cli_ok("service", "list").stdout  # plain columns when not a terminal: one service a line
    assert re.search(r"^image-store  .*image-store:images:delete", listing, re.MULTILINE), listing

    # the secrets are stored hashed only
    assert files_containing(chit.data_dir, secret) == []
    assert files_containing(chit.data_dir, image_store_secret) == []


def test_a_service_with_no_needs_gets_tokens_with_no_permissions(chit: ChitServer, manifests: Path) -> None:
    path = manifest(manifests, "needless", '[permissions]\n"x:read" = "Read x"\n')
    secret = chit.cli_ok("service", "register", str(path), "--json").json()["client_secret"]
    token = client_token(chit, "needless", secret)
    assert token.json()["scope"] == ""
    assert claims(token)["aud"] == ["chit"]
    asked = httpx.post(
        chit.token_url,
        data={"grant_type": "client_credentials", "scope": "needless:x:read"},
        auth=("needless", secret),
        timeout=30,
    )
    assert asked.status_code == 400
    assert asked.json()["error"] == "invalid_scope"  # it does not hold its own permissions either


def test_the_service_client_may_use_client_credentials_only(chit: ChitServer, manifests: Path) -> None:
    path = manifest(manifests, "cc-only", '[permissions]\n"x:read" = "Read x"\n')
    secret = chit.cli_ok("service", "register", str(path), "--json").json()["client_secret"]
    r = httpx.post(
        chit.token_url,
        data={"grant_type": "password", "username": "admin", "password": "whatever-it-is"},
        auth=("cc-only", secret),
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"


# re-running register on the same manifest is a no-op ---------------------------------------------


def test_registering_the_same_manifest_again_is_a_no_op(chit: ChitServer, manifests: Path) -> None:
    body = '[permissions]\n"x:read" = "Read x"\n"x:write" = "Write x"\n[roles]\nreader = ["x:read"]\n'
    body += '[needs]\npermissions = ["elsewhere:y:read"]\n'
    path = manifest(manifests, "idem", body)
    first = chit.cli_ok("service", "register", str(path), "--json").json()
    secret = first["client_secret"]
    assert secret

    with registry(chit) as store:
        row_before = store.service("idem")
        client_before = store.client_by_client_id("idem")
    events_before = audit_count(chit)

    again = chit.cli_ok("service", "register", str(path))
    assert again.stdout.strip() == "Service idem is registered and unchanged"
    assert secret not in again.stdout
    assert "client_secret" not in again.stdout
    as_json = chit.cli_ok("service", "register", str(path), "--json").json()
    assert as_json["client_secret"] is None
    assert (as_json["created"], as_json["changed"]) == (False, False)

    # the same meaning, reordered and reformatted, is the same manifest
    reordered = '[needs]\npermissions = [ "elsewhere:y:read" ]\n[roles]\nreader = ["idem:x:read"]\n'
    reordered += '[permissions]\n"x:write" = "Write x"\n"x:read" = "Read x"\n'
    again = chit.cli_ok("service", "register", str(manifest(manifests, "idem", reordered, name="idem-2")))
    assert "unchanged" in again.stdout

    assert audit_count(chit) == events_before  # nothing was written, not even an audit event
    with registry(chit) as store:
        assert store.service("idem") == row_before  # updated_at included
        assert store.client_by_client_id("idem") == client_before
    assert client_token(chit, "idem", secret).status_code == 200  # the first secret still works


# updates -----------------------------------------------------------------------------------------


def test_updating_a_manifest_applies_the_change(chit: ChitServer, manifests: Path) -> None:
    v1 = '[permissions]\n"docs:read" = "Read a doc"\n[roles]\nreader = ["docs:read"]\n'
    path = manifest(manifests, "upd", v1)
    secret = chit.cli_ok("service", "register", str(path), "--json").json()["client_secret"]
    chit.add_user("upd-user", "upd-user-password", "--role", "upd:reader")
    with registry(chit) as store:
        registered_at = store.service("upd").registered_at  # type: ignore[union-attr]

    v2 = '[permissions]\n"docs:read" = "Read a doc"\n"docs:write" = "Write a doc"\n'
    v2 += '[roles]\nreader = ["docs:read"]\nwriter = ["docs:read", "docs:write"]\n'
    v2 += '[needs]\npermissions = ["idem:x:read"]\n'
    manifest(manifests, "upd", v2)
    events_before = audit_count(chit)
    result = chit.cli_ok("service", "register", str(path), "--json").json()
    assert (result["created"], result["changed"], result["client_secret"]) == (False, True, None)
    assert audit_count(chit) == events_before + 1
    event = chit.cli_ok("audit", "tail", "--json", "-n", "1").json()["events"][0]
    assert event["type"] == "service.registered"
    assert event["detail"] == {"created": False, "service": "upd"}

    roles = {r["name"]: r for r in chit.cli_ok("role", "list", "--json").json()["roles"]}
    assert roles["upd:writer"]["permissions"] == ["upd:docs:read", "upd:docs:write"]
    with registry(chit) as store:
        service = store.service("upd")
        assert service is not None
        assert service.registered_at == registered_at
        assert "upd:docs:write" in store.defined_permissions()

    chit.cli_ok("grant", "user:upd-user", "upd:writer")
    assert scope(login(chit, "upd-user", "upd-user-password")) == {"upd:docs:read", "upd:docs:write"}
    assert scope(client_token(chit, "upd", secret)) == {"idem:x:read"}  # the new [needs], same secret


def test_removing_a_permission_someone_holds_is_refused_and_changes_nothing(chit: ChitServer, manifests: Path) -> None:
    v1 = '[permissions]\n"bar:read" = "Read"\n"bar:write" = "Write"\n'
    v1 += '[roles]\nreader = ["bar:read"]\nwriter = ["bar:read", "bar:write"]\n'
    path = manifest(manifests, "held", v1)
    chit.cli_ok("service", "register", str(path))
    chit.add_user("held-user", "held-user-password", "--role", "held:writer")
    chit.add_client("held-bot", "--scope", "held:bar:write")
    services_before = chit.cli_ok("service", "list", "--json").stdout
    events_before = audit_count(chit)
    refusals_before = audit_count(chit, "admin.refused")

    drop_permission = '[permissions]\n"bar:read" = "Read"\n[roles]\nreader = ["bar:read"]\nwriter = ["bar:read"]\n'
    manifest(manifests, "held", drop_permission)
    reason = assert_refused(chit.cli("service", "register", str(path)), "still granted")
    assert "held:bar:write via role held:writer granted to user held-user" in reason
    assert "held:bar:write in the scope of client held-bot" in reason

    drop_role = '[permissions]\n"bar:read" = "Read"\n"bar:write" = "Write"\n[roles]\nreader = ["bar:read"]\n'
    manifest(manifests, "held", drop_role)
    assert_refused(chit.cli("service", "register", str(path)), "role held:writer granted to user held-user")

    assert chit.cli_ok("service", "list", "--json").stdout == services_before
    assert audit_count(chit) == events_before
    assert audit_count(chit, "admin.refused") == refusals_before + 2  # each refusal is on record
    assert scope(login(chit, "held-user", "held-user-password")) == {"held:bar:read", "held:bar:write"}

    # once nobody holds it, the role can go
    chit.cli_ok("revoke-grant", "user:held-user", "held:writer")
    assert "Updated service held" in chit.cli_ok("service", "register", str(path)).stdout
    roles = {r["name"] for r in chit.cli_ok("role", "list", "--json").json()["roles"]}
    assert "held:writer" not in roles
    assert "held:reader" in roles


# what [needs] and [on_behalf] may name ---------------------------------------------------------------


def test_needs_naming_an_undefined_permission_of_a_registered_service_is_refused(
    chit: ChitServer, manifests: Path
) -> None:
    chit.cli_ok("service", "register", str(manifest(manifests, "ledger", '[permissions]\n"entries:read" = "Read"\n')))
    typo = manifest(manifests, "auditor", '[needs]\npermissions = ["ledger:entires:read"]\n')
    assert_refused(
        chit.cli("service", "register", str(typo)),
        "ledger:entires:read",
        "defines no such permission",
        "did you mean ledger:entries:read",
    )
    on_behalf = manifest(manifests, "auditor", '[on_behalf]\npermissions = ["ledger:entries:raed"]\n', name="ob")
    assert_refused(chit.cli("service", "register", str(on_behalf)), "did you mean ledger:entries:read")
    names = [s["id"] for s in chit.cli_ok("service", "list", "--json").json()["services"]]
    assert "auditor" not in names
    with registry(chit) as store:
        assert store.client_by_client_id("auditor") is None


def test_needs_naming_a_service_not_registered_yet_is_accepted(chit: ChitServer, manifests: Path) -> None:
    early = manifest(manifests, "early", '[needs]\npermissions = ["late:jobs:read"]\n')
    secret = chit.cli_ok("service", "register", str(early), "--json").json()["client_secret"]
    token = claims(client_token(chit, "early", secret))
    assert token["scope"] == "late:jobs:read"
    assert token["aud"] == ["late"]
    # ... and it can register later on, in any order
    late = manifest(manifests, "late", '[permissions]\n"jobs:read" = "Read a job"\n')
    assert chit.cli_ok("service", "register", str(late), "--json").json()["created"] is True


# roles and clients name only defined permissions -------------------------------------------------


def test_role_create_and_client_add_refuse_undefined_permissions_with_the_closest_names(
    chit: ChitServer, manifests: Path
) -> None:
    body = '[permissions]\n"orders:read" = "Read"\n"orders:refund" = "Refund"\n'
    chit.cli_ok("service", "register", str(manifest(manifests, "shop", body)))

    assert_refused(
        chit.cli("role", "create", "shop-typo", "--permission", "shop:orders:raed"),
        "shop:orders:raed",
        "did you mean",
        "shop:orders:read",
    )
    assert_refused(
        chit.cli("role", "create", "shop-typo", "--permission", "shpo:orders:read"),
        "no registered service 'shpo'",
        "did you mean shop",
    )
    assert_refused(
        chit.cli("client", "add", "shop-typo", "--scope", "shop:order:refund"),
        "shop:order:refund",
        "shop:orders:refund",
    )
    # nothing was created: both names are still free
    chit.cli_ok("role", "create", "shop-typo", "--permission", "shop:orders:read", "--permission", "shop:orders:*")
    chit.add_client("shop-typo", "--scope", "shop:orders:refund")
    # chit's own permissions need no manifest
    chit.cli_ok("role", "create", "shop-audit", "--permission", "chit:audit:read")


def test_role_create_refuses_names_that_belong_to_a_services_manifest(chit: ChitServer, manifests: Path) -> None:
    chit.cli_ok("service", "register", str(manifest(manifests, "owned", '[permissions]\n"a:read" = "Read"\n')))
    assert_refused(chit.cli("role", "create", "owned:sneaky", "--permission", "owned:a:read"), "manifest")


@pytest.mark.parametrize("name", ["future:viewer", "chit:service-admin.future"])
def test_role_create_refuses_the_names_of_a_service_not_registered_yet(
    chit: ChitServer, manifests: Path, name: str
) -> None:
    """Taken first, such a name would make the service's registration fail: it is its manifest's to create."""
    assert_refused(chit.cli("role", "create", name, "--permission", "chit:audit:read"), "manifest")
    body = '[permissions]\n"a:read" = "Read"\n\n[roles]\nviewer = ["a:read"]\n'
    registered = chit.cli("service", "register", str(manifest(manifests, "future", body)))
    assert registered.exit_code == 0, registered.stderr


# registration refusals ---------------------------------------------------------------------------


def test_a_client_id_taken_by_another_client_refuses_registration(chit: ChitServer, manifests: Path) -> None:
    existing = chit.add_client("squatted")
    path = manifest(manifests, "squatted", '[permissions]\n"a:read" = "Read"\n')
    assert_refused(chit.cli("service", "register", str(path)), "'squatted'", "taken")
    assert "squatted" not in [s["id"] for s in chit.cli_ok("service", "list", "--json").json()["services"]]
    assert client_token(chit, "squatted", existing["client_secret"]).status_code == 200


def test_a_manifest_with_an_error_points_at_the_line_and_key(chit: ChitServer, manifests: Path) -> None:
    path = manifest(manifests, "broken", '\n[permissions]\n"a:read" = "Read"\n\n[roles]\nreader = ["a:raed"]\n')
    events_before = audit_count(chit)
    reason = assert_refused(chit.cli("service", "register", str(path)))
    assert reason == f"chit: {path}:8: roles.reader: 'a:raed' is not defined under [permissions]"
    assert audit_count(chit) == events_before

    syntax = manifest(manifests, "broken", '[permissions]\n"a:read" = "Read\n', name="syntax")
    assert_refused(chit.cli("service", "register", str(syntax)), f"{syntax}:4: toml:")
    assert "broken" not in [s["id"] for s in chit.cli_ok("service", "list", "--json").json()["services"]]


def test_a_manifest_that_cannot_be_read_is_refused(chit: ChitServer, manifests: Path) -> None:
    assert_refused(chit.cli("service", "register", str(manifests / "missing.toml")), "cannot read")
    binary = manifests / "binary.toml"
    binary.write_bytes(b"id = \xff\xfe\n")
    assert_refused(chit.cli("service", "register", str(binary)), "cannot read")


# removing a service ------------------------------------------------------------------------------


def admin_headers(chit: ChitServer) -> dict[str, str]:
    from helpers import ADMIN_PASSWORD

    return {"Authorization": "Bearer " + login(chit, "admin", ADMIN_PASSWORD).json()["access_token"]}


def test_removing_a_service_ends_its_client_and_its_tokens_and_frees_its_id(chit: ChitServer, manifests: Path) -> None:
    body = '[needs]\npermissions = ["image-store:images:read"]\n'
    body += '[permissions]\n"x:read" = "Read x"\n[roles]\nr = ["x:read"]\n'
    path = manifest(manifests, "leaving", body)
    first = chit.cli_ok("service", "register", str(path), "--json").json()
    token = client_token(chit, "leaving", first["client_secret"])
    assert scope(token) == {"image-store:images:read"}
    assert chit.cli_ok("service", "remove", "leaving").stdout.strip() == "Removed service leaving"
    assert "leaving" not in chit.cli_ok("service", "list", "--json").stdout
    assert client_token(chit, "leaving", first["client_secret"]).status_code == 401  # the client is gone
    with registry(chit) as store:
        assert store.service("leaving") is None
        assert store.client_by_client_id("leaving") is None
        assert not [r for r in store.roles() if r["name"].startswith("leaving:")]
        assert "leaving:x:read" not in store.defined_permissions()
    # the token issued before is no longer active anywhere the server decides
    gateway = chit.add_client("leaving-introspector", "--grant", "client_credentials")
    answer = httpx.post(
        chit.url + "/oauth2/introspect",
        data={"token": token.json()["access_token"]},
        auth=("leaving-introspector", gateway["client_secret"]),
        timeout=30,
    )
    assert answer.json() == {"active": False}
    events = chit.cli_ok("audit", "tail", "--json", "-n", "5").json()["events"]
    assert "service.removed" in [e["type"] for e in events]

    again = chit.cli_ok("service", "register", str(path), "--json").json()
    assert again["created"] is True
    assert again["client_secret"] not in (None, first["client_secret"])


def test_a_service_whose_role_someone_holds_is_not_removed(chit: ChitServer, manifests: Path) -> None:
    path = manifest(manifests, "holding", '[permissions]\n"y:read" = "Read y"\n[roles]\nreader = ["y:read"]\n')
    chit.cli_ok("service", "register", str(path))
    chit.add_user("holding-user", "holding-user-password", "--role", "holding:reader")
    events_before = audit_count(chit)
    assert_refused(
        chit.cli("service", "remove", "holding"), "still granted", "role holding:reader granted to user holding-user"
    )
    assert audit_count(chit) == events_before  # nothing changed
    assert "holding" in chit.cli_ok("service", "list", "--json").stdout
    assert scope(login(chit, "holding-user", "holding-user-password")) == {"holding:y:read"}
    assert_refused(chit.cli("service", "remove", "no-such-service"), "no registered service 'no-such-service'")


def test_removing_over_the_api_takes_services_admin_and_is_audited(chit: ChitServer, manifests: Path) -> None:
    chit.cli_ok("service", "register", str(manifest(manifests, "api-leaving", '[permissions]\n"z:read" = "Read z"\n')))
    chit.cli_ok("role", "create", "api-leaving-reader", "--permission", "chit:services:read")
    chit.add_user("no-services-admin", "no-services-admin-password", "--role", "api-leaving-reader")
    narrow = login(chit, "no-services-admin", "no-services-admin-password").json()["access_token"]
    refused = httpx.delete(
        chit.url + "/admin/services/api-leaving",
        headers={"Authorization": f"Bearer {narrow}", "X-Request-ID": "remove-refused-1"},
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    headers = admin_headers(chit)
    trail = httpx.get(chit.url + "/admin/audit", params={"request_id": "remove-refused-1"}, headers=headers, timeout=30)
    [event] = trail.json()["events"]
    assert (event["type"], event["outcome"], event["detail"]["operation"]) == (
        "admin.refused",
        "failure",
        "service.remove",
    )
    done = httpx.delete(chit.url + "/admin/services/api-leaving", headers=headers, timeout=30)
    assert done.json() == {"removed": "api-leaving"}
    assert httpx.delete(chit.url + "/admin/services/api-leaving", headers=headers, timeout=30).status_code == 404
