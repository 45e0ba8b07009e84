"""The audit log (issue 3): every issuance and refusal, failed login, refresh, reuse detection,
revocation, API key exchange and admin change is an event with who, what, from where and which
request; no secret ever reaches it; ``chit audit verify`` finds an edited or deleted event; the
chain holds under concurrent requests. Against a real server over HTTP.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ROOT, ChitServer, CliResult, ModuleServers

from chit.storage.engine import SQLITE_FILE

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:chit:token-type:api-key"
SERVICE = """\
id = "ledger"
description = "Books"

[permissions]
"entries:read" = "Read an entry"
"entries:write" = "Write an entry"

[roles]
reader = ["entries:read"]
writer = ["entries:read", "entries:write"]
"""


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("audit", manifests=[SERVICE])


class Admin:
    def __init__(self, chit: ChitServer) -> None:
        self.chit = chit
        r = password_login(chit, "admin", ADMIN_PASSWORD)
        assert r.status_code == 200, r.text
        self.token: str = r.json()["access_token"]
        self.subject: str = claims_of(self.token)["sub"]

    def call(self, method: str, path: str, request_id: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return httpx.request(method, self.chit.url + path, headers=headers, timeout=30, **kwargs)

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        r = self.call("GET", "/admin/audit", params={"limit": 1000, **filters})
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Admin:
    return Admin(chit)


def rid() -> str:
    return "test-" + uuid.uuid4().hex


def password_login(chit: ChitServer, username: str, password: str, request_id: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    data = {"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password}
    return httpx.post(chit.token_url, data=data, headers=headers, timeout=30)


def token_request(chit: ChitServer, data: dict[str, str], request_id: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(chit.token_url, data=data, headers={"X-Request-ID": request_id}, timeout=30, **kwargs)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def only(events: list[dict[str, Any]], type: str) -> dict[str, Any]:
    matching = [e for e in events if e["type"] == type]
    assert len(matching) == 1, events
    return matching[0]


def assert_recent_utc(event: dict[str, Any]) -> None:
    """``time`` is microseconds since the epoch, UTC: within the last minute."""
    assert isinstance(event["time"], int)
    assert abs(event["time"] / 1_000_000 - time.time()) < 60, event


def audit_tail(chit: ChitServer, *args: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = chit.cli_ok("audit", "tail", "--json", *args).json()["events"]
    return events


# the token endpoint --------------------------------------------------------------------------------


def test_issuance_is_recorded_with_its_request_and_source(chit: ChitServer, admin: Admin) -> None:
    user_id = chit.add_user("iss-user", "iss-user-password", "--role", "ledger:reader")["id"]
    request_id = rid()
    r = password_login(chit, "iss-user", "iss-user-password", request_id)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == request_id
    event = only(admin.events(request_id=request_id), "token.issued")
    assert event["outcome"] == "success"
    assert event["client_id"] == "chit-cli"
    assert event["subject"] == user_id
    assert event["token_id"] == claims_of(r.json()["access_token"])["jti"]
    assert event["source"] == "127.0.0.1"
    assert event["request_id"] == request_id
    assert event["detail"]["grant_type"] == "password"
    assert event["detail"]["scope"] == "ledger:entries:read"
    assert event["detail"]["session"] == claims_of(r.json()["access_token"])["sid"]
    assert_recent_utc(event)


def test_a_request_without_an_id_gets_one(chit: ChitServer, admin: Admin) -> None:
    client = chit.add_client("no-rid-svc")
    r = httpx.post(
        chit.token_url, data={"grant_type": "client_credentials"}, auth=("no-rid-svc", client["client_secret"])
    )
    generated = r.headers["x-request-id"]
    assert len(generated) >= 16
    assert only(admin.events(request_id=generated), "token.issued")["client_id"] == "no-rid-svc"
    for insane in ("spaces and; semicolons", "x" * 65):
        r = httpx.post(
            chit.token_url,
            data={"grant_type": "client_credentials"},
            auth=("no-rid-svc", client["client_secret"]),
            headers={"X-Request-ID": insane},
        )
        replaced = r.headers["x-request-id"]
        assert replaced != insane
        assert only(admin.events(request_id=replaced), "token.issued")["client_id"] == "no-rid-svc"


def test_refusals_are_recorded_with_grant_type_and_error(chit: ChitServer, admin: Admin) -> None:
    client = chit.add_client("refused-svc", "--scope", "ledger:entries:read")
    request_id = rid()
    r = token_request(
        chit,
        {"grant_type": "client_credentials", "scope": "ledger:entries:write"},
        request_id,
        auth=("refused-svc", client["client_secret"]),
    )
    assert r.json()["error"] == "invalid_scope"
    event = only(admin.events(request_id=request_id), "token.refused")
    assert event["outcome"] == "failure"
    assert event["client_id"] == "refused-svc"
    assert event["detail"] == {"grant_type": "client_credentials", "error": "invalid_scope"}
    assert event["source"] == "127.0.0.1"

    request_id = rid()
    r = token_request(chit, {"grant_type": "client_credentials"}, request_id, auth=("refused-svc", "wrong-secret"))
    assert r.status_code == 401
    event = only(admin.events(request_id=request_id), "token.refused")
    assert event["detail"] == {"grant_type": "client_credentials", "error": "invalid_client"}

    request_id = rid()
    r = token_request(chit, {"grant_type": "implicit"}, request_id, auth=("refused-svc", client["client_secret"]))
    event = only(admin.events(request_id=request_id), "token.refused")
    assert event["detail"] == {"grant_type": "implicit", "error": "unsupported_grant_type"}


def test_failed_logins_are_recorded(chit: ChitServer, admin: Admin) -> None:
    user_id = chit.add_user("fail-user", "fail-user-password")["id"]
    request_id = rid()
    assert password_login(chit, "fail-user", "not-the-password", request_id).status_code == 400
    events = admin.events(request_id=request_id)
    failed = only(events, "login.failed")
    assert failed["outcome"] == "failure"
    assert failed["subject"] == user_id
    assert failed["detail"] == {"username": "fail-user"}
    assert failed["source"] == "127.0.0.1"
    assert only(events, "token.refused")["detail"] == {"grant_type": "password", "error": "invalid_grant"}

    request_id = rid()
    assert password_login(chit, "no-such-user-here", "whatever-password", request_id).status_code == 400
    failed = only(admin.events(request_id=request_id), "login.failed")
    assert failed["subject"] is None
    assert failed["detail"] == {"username": "no-such-user-here"}


def test_refresh_and_reuse_detection_are_recorded(chit: ChitServer, admin: Admin) -> None:
    user_id = chit.add_user("reuse-user", "reuse-user-password")["id"]
    first = password_login(chit, "reuse-user", "reuse-user-password").json()
    session = claims_of(first["access_token"])["sid"]
    data = {"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": first["refresh_token"]}

    request_id = rid()
    assert token_request(chit, data, request_id).status_code == 200
    issued = only(admin.events(request_id=request_id), "token.issued")
    assert issued["detail"]["grant_type"] == "refresh_token"
    assert issued["detail"]["session"] == session
    assert issued["subject"] == user_id

    request_id = rid()
    assert token_request(chit, data, request_id).status_code == 400  # the same refresh token again
    events = admin.events(request_id=request_id)
    reuse = only(events, "refresh.reuse_detected")
    assert reuse["outcome"] == "failure"
    assert reuse["subject"] == user_id
    assert reuse["token_id"] == session
    assert reuse["client_id"] == "chit-cli"
    assert only(events, "token.refused")["detail"]["error"] == "invalid_grant"


def test_revocations_are_recorded(chit: ChitServer, admin: Admin) -> None:
    user_id = chit.add_user("revoke-user", "revoke-user-password")["id"]
    tokens = password_login(chit, "revoke-user", "revoke-user-password").json()
    jti = claims_of(tokens["access_token"])["jti"]
    session = claims_of(tokens["access_token"])["sid"]
    revoke = chit.url + "/oauth2/revoke"
    request_id = rid()
    r = httpx.post(
        revoke, data={"token": tokens["access_token"], "client_id": "chit-cli"}, headers={"X-Request-ID": request_id}
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == request_id
    event = only(admin.events(request_id=request_id), "token.revoked")
    assert event["subject"] == user_id
    assert event["token_id"] == jti
    assert event["client_id"] == "chit-cli"
    assert event["source"] == "127.0.0.1"
    assert_recent_utc(event)

    request_id = rid()
    r = httpx.post(
        revoke, data={"token": tokens["refresh_token"], "client_id": "chit-cli"}, headers={"X-Request-ID": request_id}
    )
    assert r.status_code == 200
    event = only(admin.events(request_id=request_id), "session.revoked")
    assert event["subject"] == user_id
    assert event["token_id"] == session
    assert event["source"] == "127.0.0.1"
    assert only(admin.events(type="session.revoked", subject=user_id), "session.revoked") == event

    # an admin revoking a session over the API is recorded with the admin as the actor
    other = password_login(chit, "revoke-user", "revoke-user-password").json()
    other_session = claims_of(other["access_token"])["sid"]
    request_id = rid()
    assert admin.call("DELETE", f"/admin/sessions/{other_session}", request_id).json() == {"revoked": True}
    event = only(admin.events(request_id=request_id), "session.revoked")
    assert event["subject"] == user_id
    assert event["actors"] == [admin.subject]
    assert event["detail"] == {"session": other_session}


def test_api_key_exchange_is_recorded(chit: ChitServer, admin: Admin) -> None:
    owner_id = chit.add_user("key-owner", "key-owner-password", "--role", "ledger:reader")["id"]
    edge = chit.add_client("audit-edge", "--grant", TOKEN_EXCHANGE)
    chit.cli_ok("role", "create", "audit-edge-role", "--permission", "chit:api-keys:exchange")
    chit.cli_ok("grant", "client:audit-edge", "audit-edge-role")
    key = chit.cli_ok("api-key", "create", "--owner", "key-owner", "--scope", "ledger:entries:read", "--json").json()
    request_id = rid()
    r = token_request(
        chit,
        {"grant_type": TOKEN_EXCHANGE, "subject_token": key["api_key"], "subject_token_type": API_KEY_TYPE},
        request_id,
        auth=("audit-edge", edge["client_secret"]),
    )
    assert r.status_code == 200, r.text
    events = admin.events(request_id=request_id)
    exchanged = only(events, "api_key.exchanged")
    assert exchanged["subject"] == owner_id
    assert exchanged["client_id"] == "audit-edge"
    assert exchanged["detail"] == {"key_id": key["id"]}
    assert exchanged["token_id"] == claims_of(r.json()["access_token"])["jti"]
    assert only(events, "token.issued")["detail"]["grant_type"] == TOKEN_EXCHANGE


# admin changes -------------------------------------------------------------------------------------


def test_admin_changes_over_the_api_are_recorded_with_actor_subject_source_and_request(
    chit: ChitServer, admin: Admin
) -> None:
    def call(method: str, path: str, body: Any = None) -> tuple[str, httpx.Response]:
        request_id = rid()
        r = admin.call(method, path, request_id, json=body)
        assert r.status_code in (200, 201), r.text
        return request_id, r

    def event_of(request_id: str, type: str) -> dict[str, Any]:
        event = only(admin.events(request_id=request_id), type)
        assert event["actors"] == [admin.subject]
        assert event["client_id"] == "chit-cli"
        assert event["source"] == "127.0.0.1"
        assert event["request_id"] == request_id
        assert event["outcome"] == "success"
        assert_recent_utc(event)
        return event

    request_id, r = call("POST", "/admin/users", {"username": "ac-user", "password": "ac-user-password"})
    user_id = r.json()["id"]
    event = event_of(request_id, "user.created")
    assert event["subject"] == user_id
    assert event["detail"] == {"username": "ac-user", "roles": []}

    request_id, _ = call("POST", "/admin/grants", {"principal": "ac-user", "role": "ledger:writer"})
    event = event_of(request_id, "grant.added")
    assert event["subject"] == user_id
    assert event["detail"] == {"principal": "user:ac-user", "role": "ledger:writer"}

    request_id, _ = call("POST", "/admin/grants/revoke", {"principal": "ac-user", "role": "ledger:writer"})
    event = event_of(request_id, "grant.revoked")
    assert event["subject"] == user_id
    assert event["detail"] == {"principal": "user:ac-user", "role": "ledger:writer"}

    manifest = 'id = "journal"\n[permissions]\n"pages:read" = "Read a page"\n'
    request_id, _ = call("PUT", "/admin/services/journal", {"manifest": manifest})
    assert event_of(request_id, "service.registered")["detail"] == {"service": "journal", "created": True}

    request_id, _ = call("POST", "/admin/service-admins", {"username": "ac-user", "service": "journal"})
    event = event_of(request_id, "admin.appointed")
    assert event["subject"] == user_id
    assert event["detail"] == {"username": "ac-user", "service": "journal"}

    call("POST", "/admin/grants", {"principal": "ac-user", "role": "ledger:reader"})
    request_id, r = call("POST", "/admin/api-keys", {"owner": "ac-user", "scope": ["ledger:entries:read"]})
    key_id = r.json()["id"]
    event = event_of(request_id, "api_key.created")
    assert event["subject"] == user_id
    assert event["detail"] == {"key_id": key_id, "owner": "user:ac-user", "scope": ["ledger:entries:read"]}
    request_id, _ = call("POST", f"/admin/api-keys/{key_id}/rotate")
    assert event_of(request_id, "api_key.rotated")["detail"] == {"key_id": key_id}
    request_id, _ = call("DELETE", f"/admin/api-keys/{key_id}")
    assert event_of(request_id, "api_key.revoked")["detail"] == {"key_id": key_id}

    request_id, r = call("POST", "/admin/keys/rotate", {})
    event = event_of(request_id, "keys.rotated")
    assert event["detail"]["kid"] == r.json()["kid"]
    assert event["detail"]["immediate"] is False

    request_id, _ = call("POST", "/admin/users/ac-user/disable")
    assert event_of(request_id, "user.disabled")["subject"] == user_id


def test_a_refused_admin_change_records_only_its_refusal(chit: ChitServer, admin: Admin) -> None:
    chit.add_user("refused-change", "refused-change-password")
    request_id = rid()
    r = admin.call("POST", "/admin/users", request_id, json={"username": "refused-change", "password": "x" * 12})
    assert r.status_code == 409
    [event] = admin.events(request_id=request_id)
    assert (event["type"], event["outcome"]) == ("admin.refused", "failure")
    assert event["detail"]["operation"] == "user.create"
    assert event["detail"]["username"] == "refused-change"
    assert "password" not in event["detail"]
    assert "already exists" in event["detail"]["reason"]


def test_admin_changes_over_the_cli_are_recorded_as_the_operator(chit: ChitServer) -> None:
    user_id = chit.add_user("cli-changed", "cli-changed-password")["id"]
    chit.cli_ok("grant", "user:cli-changed", "ledger:reader")
    events = audit_tail(chit, "--subject", user_id)
    assert [e["type"] for e in events] == ["user.created", "grant.added"]
    for event in events:
        assert event["actors"] == ["operator"]
        assert event["source"] == "cli"
        assert event["time"].endswith("+00:00")  # rendered in UTC


# no secret reaches the audit log -------------------------------------------------------------------


def test_no_secret_ever_appears_in_the_audit_table(chit: ChitServer, admin: Admin) -> None:
    secrets: list[str] = [ADMIN_PASSWORD, admin.token]
    password = "a-password-that-must-never-be-logged"
    secrets.append(password)
    chit.add_user("secret-user", password, "--role", "ledger:writer")
    tokens = password_login(chit, "secret-user", password).json()
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    refreshed = httpx.post(
        chit.token_url,
        data={"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": tokens["refresh_token"]},
    ).json()
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    # a reuse, a wrong password, a revocation
    httpx.post(
        chit.token_url,
        data={"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": tokens["refresh_token"]},
    )
    wrong = "wrong-password-also-secret"
    secrets.append(wrong)
    password_login(chit, "secret-user", wrong)
    httpx.post(chit.url + "/oauth2/revoke", data={"token": refreshed["access_token"], "client_id": "chit-cli"})

    client = chit.add_client("secret-svc", "--scope", "ledger:entries:read", "--grant", "client_credentials")
    secrets.append(client["client_secret"])
    cc = httpx.post(
        chit.token_url, data={"grant_type": "client_credentials"}, auth=("secret-svc", client["client_secret"])
    )
    secrets.append(cc.json()["access_token"])
    httpx.post(chit.token_url, data={"grant_type": "client_credentials"}, auth=("secret-svc", "wrong-client-secret"))
    secrets.append("wrong-client-secret")
    manifest = ROOT / "examples" / "photos" / "tagging.toml"
    secrets.append(chit.cli_ok("service", "register", str(manifest), "--json").json()["client_secret"])

    edge = chit.add_client("secret-edge", "--grant", TOKEN_EXCHANGE)
    secrets.append(edge["client_secret"])
    chit.cli_ok("role", "create", "secret-edge-role", "--permission", "chit:api-keys:exchange")
    chit.cli_ok("grant", "client:secret-edge", "secret-edge-role")
    key = chit.cli_ok("api-key", "create", "--owner", "secret-user", "--scope", "ledger:entries:read", "--json").json()
    rotated = chit.cli_ok("api-key", "rotate", key["id"], "--json").json()
    for api_key in (key["api_key"], rotated["api_key"]):
        secrets += [api_key, api_key.split(".", 1)[1]]
        httpx.post(
            chit.token_url,
            data={"grant_type": TOKEN_EXCHANGE, "subject_token": api_key, "subject_token_type": API_KEY_TYPE},
            auth=("secret-edge", edge["client_secret"]),
        )
    r = admin.call("POST", "/admin/users", json={"username": "secret-api-user", "password": "api-made-password"})
    assert r.status_code == 201
    secrets.append("api-made-password")

    with sqlite3.connect(chit.data_dir / SQLITE_FILE) as db:
        rows = db.execute("SELECT * FROM audit_events").fetchall()
    assert len(rows) > 20
    text = "\n".join("\t".join("" if v is None else str(v) for v in row) for row in rows)
    assert "api_key.exchanged" in text  # the scan covers what the test did
    for secret in secrets:
        assert secret not in text, secret[:12]
        for part in secret.split(".") if secret.count(".") == 2 else ():  # a JWT's signature alone
            assert part[-40:] not in text


# tail, filters, verify ---------------------------------------------------------------------------


def test_audit_tail_filters_by_type_and_subject(chit: ChitServer) -> None:
    user_id = chit.add_user("tail-user", "tail-user-password")["id"]
    for _ in range(3):
        password_login(chit, "tail-user", "tail-user-password")
    password_login(chit, "tail-user", "wrong-wrong-wrong")
    mine = audit_tail(chit, "--subject", user_id, "-n", "100")
    assert [e["type"] for e in mine] == ["user.created", "token.issued", "token.issued", "token.issued", "login.failed"]
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)  # oldest first
    issued = audit_tail(chit, "--subject", user_id, "--type", "token.issued", "-n", "2")
    assert [e["seq"] for e in issued] == [e["seq"] for e in mine[2:4]]  # the newest two
    failed = audit_tail(chit, "--type", "login.failed", "-n", "1")
    assert failed[0]["subject"] == user_id
    human = chit.cli_ok("audit", "tail", "--subject", user_id, "-n", "100").stdout.splitlines()
    assert len(human) == 5
    assert "login.failed failure" in human[-1]
    assert f"subject={user_id}" in human[-1]


def test_the_api_filters_and_pages_the_log(chit: ChitServer, admin: Admin) -> None:
    client = chit.add_client("filter-svc", "--scope", "ledger:entries:read")
    user_id = chit.add_user("filter-user", "filter-user-password")["id"]
    start_us = int(time.time() * 1_000_000)
    request_ids = [rid() for _ in range(5)]
    for request_id in request_ids:
        token_request(
            chit, {"grant_type": "client_credentials"}, request_id, auth=("filter-svc", client["client_secret"])
        )
    token_request(
        chit,
        {"grant_type": "client_credentials", "scope": "x:y:z"},
        rid(),
        auth=("filter-svc", client["client_secret"]),
    )
    password_login(chit, "filter-user", "filter-user-password")

    by_client = admin.events(client_id="filter-svc")
    assert [e["request_id"] for e in by_client][:5] == request_ids
    assert len(by_client) == 6
    assert {e["type"] for e in admin.events(client_id="filter-svc", outcome="failure")} == {"token.refused"}
    assert len(admin.events(client_id="filter-svc", type="token.issued")) == 5
    assert len(admin.events(client_id="filter-svc", type="token.issued", outcome="failure")) == 0
    assert [e["type"] for e in admin.events(subject=user_id)] == ["user.created", "token.issued"]
    assert only(admin.events(request_id=request_ids[2]), "token.issued")["client_id"] == "filter-svc"

    since = by_client[1]["time"]
    until = by_client[4]["time"]
    window = admin.events(client_id="filter-svc", since=since, until=until)
    assert [e["request_id"] for e in window] == request_ids[1:4]
    assert all(e["time"] >= start_us for e in by_client)
    assert admin.events(client_id="filter-svc", since=int(time.time() * 1_000_000) + 60_000_000) == []

    page1 = admin.events(client_id="filter-svc", limit=4)
    page2 = admin.events(client_id="filter-svc", limit=4, after=page1[-1]["seq"])
    assert len(page1) == 4
    assert len(page2) == 2
    assert [e["seq"] for e in page1 + page2] == [e["seq"] for e in by_client]
    everything = admin.events(limit=3)
    assert [e["seq"] for e in everything] == sorted(e["seq"] for e in everything)
    assert everything[0]["seq"] == 1
    assert set(everything[0]) >= {"seq", "id", "time", "type", "outcome", "actors", "detail", "prev_hash", "hash"}


def test_verify_passes_on_an_intact_log(chit: ChitServer) -> None:
    result = chit.cli_ok("audit", "verify", "--json").json()
    assert result["intact"] is True
    assert result["problems"] == []
    assert result["events"] > 0
    assert "The audit log is intact" in chit.cli_ok("audit", "verify").stdout


def assert_tampered(result: CliResult, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "the audit log was tampered with" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_verify_finds_an_edited_event_and_a_deleted_one(server: ChitServer) -> None:
    """On a server of its own: the log is edited behind its back."""
    for name in ("t1", "t2", "t3"):
        server.add_user(name, f"{name}-password")
        password_login(server, name, f"{name}-password")
        password_login(server, name, "wrong-password!")
    assert server.cli_ok("audit", "verify", "--json").json()["intact"] is True
    database = server.data_dir / SQLITE_FILE

    with sqlite3.connect(database) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM audit_events ORDER BY seq")]
        middle = seqs[len(seqs) // 2]
        (original,) = db.execute("SELECT detail FROM audit_events WHERE seq = ?", (middle,)).fetchone()
        db.execute("UPDATE audit_events SET detail = ? WHERE seq = ?", ('{"username":"someone-else"}', middle))
    assert_tampered(server.cli("audit", "verify"), f"event {middle} ", "its content was altered")

    for column, value in (("outcome", "success"), ("time", 1), ("subject", "usr_x"), ("source", "10.0.0.9")):
        with sqlite3.connect(database) as db:
            db.execute("UPDATE audit_events SET detail = ? WHERE seq = ?", (original, middle))
            (before,) = db.execute(f"SELECT {column} FROM audit_events WHERE seq = ?", (middle,)).fetchone()  # noqa: S608
            db.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (value, middle))  # noqa: S608
        assert_tampered(server.cli("audit", "verify"), "its content was altered")
        with sqlite3.connect(database) as db:
            db.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (before, middle))  # noqa: S608
    assert server.cli_ok("audit", "verify", "--json").json()["intact"] is True  # restored: intact again

    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM audit_events WHERE seq = ?", (middle,))
    result = server.cli("audit", "verify")
    following = seqs[seqs.index(middle) + 1]
    assert_tampered(result, f"event {following} ", "deleted or altered")
    assert f"event {middle} " not in result.stderr


def test_an_anchor_catches_the_deletion_of_the_newest_events(server: ChitServer) -> None:
    """The chain alone cannot show a cut tail; a head hash recorded earlier can."""
    server.add_user("anchored", "anchored-password")
    head = server.cli_ok("audit", "verify", "--json").json()
    server.add_user("later", "later-password")
    assert server.cli_ok("audit", "verify", "--anchor", head["head_hash"], "--json").json()["intact"] is True
    with sqlite3.connect(server.data_dir / SQLITE_FILE) as db:
        db.execute("DELETE FROM audit_events WHERE seq >= ?", (head["head_seq"],))
    assert server.cli_ok("audit", "verify").exit_code == 0  # what is left still chains
    assert_tampered(server.cli("audit", "verify", "--anchor", head["head_hash"]), f"anchor {head['head_hash']}")


def test_the_chain_holds_under_concurrent_requests(chit: ChitServer) -> None:
    client = chit.add_client("burst-svc", "--scope", "ledger:entries:read")
    before = chit.cli_ok("audit", "verify", "--json").json()["events"]
    request_ids = [rid() for _ in range(40)]

    def request(request_id: str) -> int:
        r = token_request(
            chit, {"grant_type": "client_credentials"}, request_id, auth=("burst-svc", client["client_secret"])
        )
        return r.status_code

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(request, request_ids))
    assert statuses == [200] * 40
    result = chit.cli_ok("audit", "verify", "--json").json()
    assert result["intact"] is True, result["problems"]
    assert result["events"] >= before + 40
    logged = {e["request_id"] for e in audit_tail(chit, "--type", "token.issued", "-n", "1000")}
    assert set(request_ids) <= logged
