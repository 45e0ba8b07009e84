"""API keys for bots (issue 3): created over the CLI and the admin API, shown once and stored hashed,
never wider than their owner, exchanged at the edge for short-lived access tokens with the RFC 8693
token-exchange grant (``subject_token_type=urn:chit:token-type:api-key``) by a client holding
``chit:api-keys:exchange``; rotation, revocation and expiry end the old secret.

One server for the module with the photo example registered; every test uses keys and users of its own.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from helpers import ADMIN_PASSWORD, ROOT, ChitServer, CliResult, ModuleServers

from chit.server.credentials import format_api_key, hash_secret, new_secret
from chit.storage.engine import create_database_engine, sqlite_url
from chit.storage.records import new_id
from chit.storage.sql.store import Store

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:chit:token-type:api-key"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
OWNER_PERMISSIONS = {"image-store:images:read", "image-store:images:write", "image-store:images:delete"}


class Edge:
    """A client that exchanges API keys: the gateway."""

    def __init__(self, chit: ChitServer, client_id: str, secret: str) -> None:
        self.chit, self.client_id, self.secret = chit, client_id, secret

    def exchange(self, api_key: str, **extra: str) -> httpx.Response:
        data = {"grant_type": TOKEN_EXCHANGE, "subject_token": api_key, "subject_token_type": API_KEY_TYPE, **extra}
        return httpx.post(self.chit.token_url, data=data, auth=(self.client_id, self.secret), timeout=30)


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server(
        "api-keys", manifests=[ROOT / "examples" / "photos" / f"{name}.toml" for name in ("image-store", "tagging")]
    )
    server.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
    # lets its holders call the admin API (their tokens name the auth server), nothing about keys
    server.cli_ok("role", "create", "key-lister", "--permission", "chit:keys:read")
    return server


@pytest.fixture(scope="module")
def gateway(chit: ChitServer) -> Edge:
    secret = chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"]
    chit.cli_ok("grant", "client:gateway", "edge")
    return Edge(chit, "gateway", secret)


def user(chit: ChitServer, name: str, *roles: str) -> str:
    args = [arg for role in roles for arg in ("--role", role)]
    user_id: str = chit.add_user(name, f"{name}-password", *args)["id"]
    return user_id


def create_key(chit: ChitServer, owner: str, *scopes: str, expires_in: int | None = None) -> dict[str, Any]:
    args = [arg for s in scopes for arg in ("--scope", s)]
    if expires_in is not None:
        args += ["--expires-in", str(expires_in)]
    data: dict[str, Any] = chit.cli_ok("api-key", "create", "--owner", owner, *args, "--json").json()
    return data


def login_token(chit: ChitServer, username: str, password: str) -> str:
    r = httpx.post(
        chit.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def scope(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return set(response.json()["scope"].split())


def assert_refused(result: CliResult, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in line, line


def assert_oauth_error(response: httpx.Response, error: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error, response.text
    assert response.headers["cache-control"] == "no-store"


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def keys_listed(chit: ChitServer, owner: str | None = None) -> dict[str, dict[str, Any]]:
    args = ["--owner", owner] if owner else []
    return {k["id"]: k for k in chit.cli_ok("api-key", "list", *args, "--json").json()["api_keys"]}


# creation ----------------------------------------------------------------------------------------


def test_create_over_the_cli_shows_the_key_once(chit: ChitServer, gateway: Edge) -> None:
    owner_id = user(chit, "cli-bot-owner", "image-store:owner")
    data = create_key(chit, "user:cli-bot-owner", "image-store:images:read", "image-store:images:write")
    key = data["api_key"]
    assert key.startswith("chit_ak_")
    assert key.startswith(f"chit_ak_{data['id']}.")
    assert data["id"].startswith("key_")
    assert data["owner_id"] == owner_id
    assert data["scope"] == ["image-store:images:read", "image-store:images:write"]
    assert (data["expires_at"], data["last_used_at"], data["revoked_at"]) == (None, None, None)
    secret = key.split(".", 1)[1]
    assert len(secret) >= 32

    human = chit.cli_ok("api-key", "create", "--owner", "cli-bot-owner", "--scope", "image-store:images:read")
    match = re.search(r"^api_key: (chit_ak_\S+)$", human.stdout, re.MULTILINE)
    assert match, human.stdout
    assert "(shown once)" in human.stdout
    assert human.stdout.count(match.group(1)) == 1

    # shown once: not in the list, nor in the audit log, nor stored anywhere as plain text
    listing = chit.cli_ok("api-key", "list", "--json").stdout + chit.cli_ok("api-key", "list").stdout
    assert data["id"] in listing
    assert secret not in listing
    assert "chit_ak_" not in listing
    audit = chit.cli_ok("audit", "tail", "--json", "-n", "10000").stdout
    assert f'"key_id": "{data["id"]}"' in audit
    assert secret not in audit
    for plain in (key, secret, match.group(1), match.group(1).split(".", 1)[1]):
        assert files_containing(chit.data_dir, plain) == []
        assert plain not in chit.log()
    assert gateway.exchange(key).status_code == 200


def test_create_over_the_api_for_oneself_but_not_for_others(chit: ChitServer, gateway: Edge) -> None:
    me_id = user(chit, "api-self", "image-store:viewer", "key-lister")
    other_id = user(chit, "api-other", "image-store:viewer")
    me = bearer(login_token(chit, "api-self", "api-self-password"))

    r = httpx.post(
        chit.url + "/admin/api-keys",
        json={"owner": "api-self", "scope": ["image-store:images:read"], "expires_in": 3600},
        headers=me,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["api_key"].startswith(f"chit_ak_{created['id']}.")
    assert created["owner_id"] == me_id
    assert created["scope"] == ["image-store:images:read"]
    assert created["expires_at"] == created["created_at"] + 3600
    assert "secret_hash" not in created
    assert scope(gateway.exchange(created["api_key"])) == {"image-store:images:read"}

    r = httpx.post(
        chit.url + "/admin/api-keys",
        json={"owner": "api-other", "scope": ["image-store:images:read"]},
        headers=me,
        timeout=30,
    )
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "insufficient_scope"
    assert "chit:api-keys:write" in r.json()["error_description"]
    assert keys_listed(chit, "api-other") == {}

    # one's own keys are listed without the secret; anyone's need chit:api-keys:read
    mine = httpx.get(chit.url + "/admin/api-keys", params={"owner": "api-self"}, headers=me, timeout=30)
    assert mine.status_code == 200, mine.text
    assert [k["id"] for k in mine.json()["api_keys"]] == [created["id"]]
    assert created["api_key"].split(".", 1)[1] not in mine.text
    assert "secret_hash" not in mine.text
    everyone = httpx.get(chit.url + "/admin/api-keys", headers=me, timeout=30)
    assert everyone.status_code == 403
    others = httpx.get(chit.url + "/admin/api-keys", params={"owner": "api-other"}, headers=me, timeout=30)
    assert others.status_code == 403

    # the super admin (chit:api-keys:write) creates keys for anyone, within that owner's permissions
    admin = bearer(login_token(chit, "admin", ADMIN_PASSWORD))
    r = httpx.post(
        chit.url + "/admin/api-keys",
        json={"owner": "user:api-other", "scope": ["image-store:images:read"]},
        headers=admin,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["owner_id"] == other_id
    assert claims_of(gateway.exchange(r.json()["api_key"]).json()["access_token"])["sub"] == other_id


def test_a_key_is_never_wider_than_its_owner(chit: ChitServer) -> None:
    user(chit, "narrow-owner", "image-store:viewer")
    assert_refused(
        chit.cli("api-key", "create", "--owner", "narrow-owner", "--scope", "image-store:images:write"),
        "cannot carry more than its owner holds",
        "image-store:images:write",
    )
    assert_refused(
        chit.cli("api-key", "create", "--owner", "narrow-owner", "--scope", "image-store:images:*"),
        "image-store:images:*",
    )
    assert_refused(chit.cli("api-key", "create", "--owner", "narrow-owner", "--scope", "chit:audit:read"))
    assert_refused(chit.cli("api-key", "create", "--owner", "nobody-such", "--scope", "image-store:images:read"))
    admin = bearer(login_token(chit, "admin", ADMIN_PASSWORD))
    r = httpx.post(
        chit.url + "/admin/api-keys",
        json={"owner": "narrow-owner", "scope": ["image-store:images:read", "image-store:images:delete"]},
        headers=admin,
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert "image-store:images:delete" in r.json()["error_description"]
    assert keys_listed(chit, "narrow-owner") == {}  # nothing was created


def test_expires_in_has_a_minimum_of_60_seconds(chit: ChitServer) -> None:
    user(chit, "expiring-owner", "image-store:viewer")
    result = chit.cli(
        "api-key", "create", "--owner", "expiring-owner", "--scope", "image-store:images:read", "--expires-in", "59"
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    data = create_key(chit, "expiring-owner", "image-store:images:read", expires_in=60)
    created = keys_listed(chit, "expiring-owner")[data["id"]]
    assert created["expires_at"] is not None
    lifetime = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(created["created_at"])
    assert lifetime.total_seconds() == 60


# the exchange --------------------------------------------------------------------------------------


def test_exchange_gives_the_owner_an_access_token_of_the_keys_scope(chit: ChitServer, gateway: Edge) -> None:
    owner_id = user(chit, "ex-owner", "image-store:owner")
    key = create_key(chit, "ex-owner", "image-store:images:read", "image-store:images:write")
    assert keys_listed(chit, "ex-owner")[key["id"]]["last_used_at"] is None

    r = gateway.exchange(key["api_key"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    assert set(body["scope"].split()) == {"image-store:images:read", "image-store:images:write"}
    claims = claims_of(body["access_token"])
    assert claims["sub"] == owner_id
    assert claims["client_id"] == "gateway"
    assert claims["aud"] == ["image-store"]
    assert body["expires_in"] == claims["exp"] - claims["iat"]
    assert r.headers["cache-control"] == "no-store"

    assert keys_listed(chit, "ex-owner")[key["id"]]["last_used_at"] is not None

    # the token is active where it matters: introspection by the gateway
    introspected = httpx.post(
        chit.url + "/oauth2/introspect",
        data={"token": body["access_token"]},
        auth=(gateway.client_id, gateway.secret),
        timeout=30,
    ).json()
    assert introspected["active"] is True
    assert introspected["sub"] == owner_id

    narrowed = gateway.exchange(key["api_key"], scope="image-store:images:read")
    assert scope(narrowed) == {"image-store:images:read"}
    assert_oauth_error(gateway.exchange(key["api_key"], scope="image-store:images:delete"), "invalid_scope")


def test_exchange_with_authlib(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "authlib-owner", "image-store:viewer")
    key = create_key(chit, "authlib-owner", "image-store:images:read")["api_key"]
    with OAuth2Client(gateway.client_id, gateway.secret, timeout=30) as client:
        token = client.fetch_token(
            chit.token_url,
            grant_type=TOKEN_EXCHANGE,
            subject_token=key,
            subject_token_type=API_KEY_TYPE,
        )
    assert token["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert token["scope"] == "image-store:images:read"


def test_the_exchange_follows_the_owners_current_permissions(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "shrinking-owner", "image-store:owner")
    key = create_key(chit, "shrinking-owner", "image-store:images:read", "image-store:images:delete")["api_key"]
    assert scope(gateway.exchange(key)) == {"image-store:images:read", "image-store:images:delete"}

    chit.cli_ok("revoke-grant", "user:shrinking-owner", "image-store:owner")
    chit.cli_ok("grant", "user:shrinking-owner", "image-store:viewer")
    assert scope(gateway.exchange(key)) == {"image-store:images:read"}

    chit.cli_ok("revoke-grant", "user:shrinking-owner", "image-store:viewer")
    r = gateway.exchange(key)
    assert scope(r) == set()
    assert claims_of(r.json()["access_token"])["aud"] == ["chit"]

    # a new grant never makes the key wider than it was made
    chit.cli_ok("grant", "user:shrinking-owner", "image-store:auditor")
    assert scope(gateway.exchange(key)) == {"image-store:images:read"}


def test_a_key_owned_by_a_service_account(chit: ChitServer, gateway: Edge) -> None:
    batch = chit.add_client("batch-job", "--scope", "tagging:tags:read", "--scope", "tagging:tags:write")
    key = create_key(chit, "client:batch-job", "tagging:tags:read")
    r = gateway.exchange(key["api_key"])
    assert scope(r) == {"tagging:tags:read"}
    assert claims_of(r.json()["access_token"])["sub"] == key["owner_id"]
    assert key["owner_id"].startswith("cli_")
    introspected = httpx.post(
        chit.url + "/oauth2/introspect",
        data={"token": r.json()["access_token"]},
        auth=(gateway.client_id, gateway.secret),
        timeout=30,
    ).json()
    assert introspected["active"] is True, introspected
    assert introspected["sub"] == key["owner_id"]
    assert batch["client_id"] == "batch-job"


def test_a_disabled_owners_key_is_refused_and_stays_dead_after_enabling(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "disabled-owner", "image-store:viewer")
    key = create_key(chit, "disabled-owner", "image-store:images:read")["api_key"]
    chit.cli_ok("user", "disable", "disabled-owner")
    assert_oauth_error(gateway.exchange(key), "invalid_grant")
    chit.cli_ok("user", "enable", "disabled-owner")
    assert_oauth_error(gateway.exchange(key), "invalid_grant")  # disabling revoked what was issued before
    time.sleep(1.1)  # times are whole seconds: what is issued in the second of the disable goes too
    fresh = create_key(chit, "disabled-owner", "image-store:images:read")["api_key"]
    assert gateway.exchange(fresh).status_code == 200


# rotation, revocation, expiry ----------------------------------------------------------------------


def test_rotation_ends_the_old_secret(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "rotating-owner", "image-store:viewer")
    key = create_key(chit, "rotating-owner", "image-store:images:read")
    rotated = chit.cli_ok("api-key", "rotate", key["id"], "--json").json()
    assert rotated["id"] == key["id"]
    assert rotated["api_key"].startswith(f"chit_ak_{key['id']}.")
    assert rotated["api_key"] != key["api_key"]
    assert_oauth_error(gateway.exchange(key["api_key"]), "invalid_grant")
    assert scope(gateway.exchange(rotated["api_key"])) == {"image-store:images:read"}
    assert files_containing(chit.data_dir, rotated["api_key"].split(".", 1)[1]) == []

    admin = bearer(login_token(chit, "admin", ADMIN_PASSWORD))
    r = httpx.post(chit.url + f"/admin/api-keys/{key['id']}/rotate", headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    assert_oauth_error(gateway.exchange(rotated["api_key"]), "invalid_grant")
    assert gateway.exchange(r.json()["api_key"]).status_code == 200


def test_revocation_ends_the_key(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "revoking-owner", "image-store:viewer")
    key = create_key(chit, "revoking-owner", "image-store:images:read")
    assert gateway.exchange(key["api_key"]).status_code == 200
    assert f"Revoked API key {key['id']}" in chit.cli_ok("api-key", "revoke", key["id"]).stdout
    assert "already revoked" in chit.cli_ok("api-key", "revoke", key["id"]).stdout
    r = gateway.exchange(key["api_key"])
    assert_oauth_error(r, "invalid_grant")
    assert keys_listed(chit, "revoking-owner")[key["id"]]["revoked_at"] is not None
    assert "REVOKED" in chit.cli_ok("api-key", "list", "--owner", "revoking-owner").stdout
    assert_refused(chit.cli("api-key", "rotate", key["id"]), "no active API key")
    assert_refused(chit.cli("api-key", "revoke", "key_nosuchkey"), "no API key")

    other = create_key(chit, "revoking-owner", "image-store:images:read")
    admin = bearer(login_token(chit, "admin", ADMIN_PASSWORD))
    r = httpx.delete(chit.url + f"/admin/api-keys/{other['id']}", headers=admin, timeout=30)
    assert r.json() == {"revoked": True}
    assert_oauth_error(gateway.exchange(other["api_key"]), "invalid_grant")


def test_an_owner_revokes_their_own_key_over_the_api_but_not_anothers(chit: ChitServer, gateway: Edge) -> None:
    user(chit, "self-revoker", "image-store:viewer", "key-lister")
    user(chit, "bystander", "image-store:viewer")
    mine = create_key(chit, "self-revoker", "image-store:images:read")
    theirs = create_key(chit, "bystander", "image-store:images:read")
    me = bearer(login_token(chit, "self-revoker", "self-revoker-password"))
    # another's key is as unknown as one that does not exist
    r = httpx.delete(chit.url + f"/admin/api-keys/{theirs['id']}", headers=me, timeout=30)
    assert r.status_code == 404
    assert httpx.post(chit.url + f"/admin/api-keys/{theirs['id']}/rotate", headers=me, timeout=30).status_code == 404
    assert gateway.exchange(theirs["api_key"]).status_code == 200
    assert httpx.delete(chit.url + f"/admin/api-keys/{mine['id']}", headers=me, timeout=30).json() == {"revoked": True}
    assert_oauth_error(gateway.exchange(mine["api_key"]), "invalid_grant")


def test_an_expired_key_is_refused(chit: ChitServer, gateway: Edge) -> None:
    owner_id = user(chit, "expired-owner", "image-store:viewer")
    engine = create_database_engine(sqlite_url(chit.data_dir))
    try:
        store = Store(engine)
        now = int(time.time())
        keys = {}
        for name, expires_at in (("expired", now - 1), ("valid", now + 3600)):
            key_id, secret = new_id("key_"), new_secret()
            store.create_api_key(
                key_id=key_id,
                owner_id=owner_id,
                secret_hash=hash_secret(secret),
                scope=["image-store:images:read"],
                now=now - 7200,
                expires_at=expires_at,
            )
            keys[name] = format_api_key(key_id, secret)
    finally:
        engine.dispose()
    r = gateway.exchange(keys["expired"])
    assert_oauth_error(r, "invalid_grant")
    assert "expired" in r.json()["error_description"]
    assert scope(gateway.exchange(keys["valid"])) == {"image-store:images:read"}  # the same way, not expired


# refusals of the exchange ------------------------------------------------------------------------


def test_a_client_without_the_exchange_permission_is_unauthorized(chit: ChitServer) -> None:
    user(chit, "refused-owner", "image-store:viewer")
    key = create_key(chit, "refused-owner", "image-store:images:read")
    secret = chit.add_client("not-an-edge", "--grant", TOKEN_EXCHANGE)["client_secret"]
    r = Edge(chit, "not-an-edge", secret).exchange(key["api_key"])
    assert_oauth_error(r, "unauthorized_client")
    assert "chit:api-keys:exchange" in r.json()["error_description"]
    assert keys_listed(chit, "refused-owner")[key["id"]]["last_used_at"] is None

    # holding the permission without the grant type is not enough either
    secret = chit.add_client("edge-without-grant", "--grant", "client_credentials")["client_secret"]
    chit.cli_ok("grant", "client:edge-without-grant", "edge")
    assert_oauth_error(Edge(chit, "edge-without-grant", secret).exchange(key["api_key"]), "unauthorized_client")


@pytest.fixture(scope="module")
def valid_key(chit: ChitServer) -> str:
    user(chit, "malformed-owner", "image-store:viewer")
    key: str = create_key(chit, "malformed-owner", "image-store:images:read")["api_key"]
    return key


@pytest.mark.parametrize(
    "extra",
    [
        {"actor_token": "chit_ak_key_x.y", "actor_token_type": API_KEY_TYPE},
        {"actor_token": "anything"},
        {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    ],
)
def test_malformed_exchanges_are_invalid_request(
    chit: ChitServer, gateway: Edge, valid_key: str, extra: dict[str, str]
) -> None:
    assert_oauth_error(gateway.exchange(valid_key, **extra), "invalid_request")
    assert gateway.exchange(valid_key).status_code == 200  # the key itself is fine


@pytest.mark.parametrize("subject_type", [ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"])
def test_a_key_sent_as_an_access_token_asks_for_delegation_which_the_gateway_may_not(
    gateway: Edge, valid_key: str, subject_type: str
) -> None:
    # exchanging an access token is a service acting for a user: the gateway is no such service
    assert_oauth_error(gateway.exchange(valid_key, subject_token_type=subject_type), "unauthorized_client")


@pytest.mark.parametrize("subject_token", ["garbage", "chit_ak_", "chit_ak_key_nosuch.secret", "chit_ak_nodot"])
def test_an_unknown_api_key_is_invalid_grant(gateway: Edge, subject_token: str) -> None:
    assert_oauth_error(gateway.exchange(subject_token), "invalid_grant")


def test_a_missing_subject_token_is_invalid_request(chit: ChitServer, gateway: Edge) -> None:
    r = httpx.post(
        chit.token_url,
        data={"grant_type": TOKEN_EXCHANGE, "subject_token_type": API_KEY_TYPE},
        auth=(gateway.client_id, gateway.secret),
        timeout=30,
    )
    assert_oauth_error(r, "invalid_request")
