"""The guide's end point runs as written: the items app moved onto chit (``examples/from-tutorial/after``),
served by uvicorn, against a real ``chit serve`` with its manifest registered and users holding its roles.
The app holds no secret and no user: it verifies the auth server's RS256 tokens with the published JWKS
and decides on the permissions named after it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest
from helpers import ChitServer, ModuleServers, ServiceProcess, access_token, claims_of, free_port, login
from tutorial_apps import AFTER, MANIFEST

TUTORIAL_SECRET = "change-me-and-share-me-with-every-service"  # the SECRET_KEY of examples/from-tutorial/before


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("from-tutorial", manifests=[MANIFEST])
    server.add_user("alice", "alice-password", "--role", "items:editor")
    server.add_user("bob", "bob-password", "--role", "items:reader")
    server.add_user("carol", "carol-password")  # holds nothing of the items service
    return server


@pytest.fixture(scope="module")
def items(chit: ChitServer) -> Iterator[httpx.Client]:
    service = ServiceProcess(
        "app", AFTER.parent, free_port(), chit.data_dir.parent / "items.log", env={"CHIT_ISSUER": chit.url}
    )
    service.start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            yield client
    finally:
        service.stop()


def token(chit: ChitServer, username: str) -> str:
    return access_token(login(chit, username, f"{username}-password"))


def bearer(chit: ChitServer, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(chit, username)}"}


def test_the_auth_server_signs_rs256_tokens_naming_the_service(chit: ChitServer) -> None:
    alice = token(chit, "alice")
    assert jwt.get_unverified_header(alice)["alg"] == "RS256"
    claims = claims_of(alice)
    assert claims["iss"] == chit.url
    assert "items" in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])
    assert set(claims["scope"].split()) == {"items:items:read", "items:items:write"}


def test_a_role_with_the_permission_writes_and_reads(chit: ChitServer, items: httpx.Client) -> None:
    alice = bearer(chit, "alice")
    created = items.post("/items/", json={"name": "hammer"}, headers=alice)
    assert created.status_code == 201, created.text
    owner = created.json()["owner"]
    assert owner.startswith("usr_")  # the user's stable id in the auth server, not a name the app keeps
    assert {"name": "hammer", "owner": owner} in items.get("/items/", headers=bearer(chit, "bob")).json()
    me = items.get("/users/me", headers=alice).json()
    assert me == {"id": owner, "permissions": ["items:items:read", "items:items:write"]}


def test_write_is_refused_without_the_permission(chit: ChitServer, items: httpx.Client) -> None:
    bob = bearer(chit, "bob")
    assert items.get("/items/", headers=bob).status_code == 200
    refused = items.post("/items/", json={"name": "saw"}, headers=bob)
    assert refused.status_code == 403, refused.text
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert "saw" not in [item["name"] for item in items.get("/items/", headers=bob).json()]


def test_no_token_or_a_token_not_for_this_service_gets_401(chit: ChitServer, items: httpx.Client) -> None:
    assert items.get("/items/").status_code == 401
    assert items.get("/users/me").status_code == 401
    # carol holds nothing here: her token does not name the items service in its audience
    refused = items.get("/users/me", headers=bearer(chit, "carol"))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


def test_a_token_signed_with_the_tutorials_secret_is_refused(chit: ChitServer, items: httpx.Client) -> None:
    """The old HS256 tokens, or anyone holding the old secret, mint nothing the app accepts any more."""
    claims = {**claims_of(token(chit, "alice")), "scope": "items:items:read items:items:write"}
    forged = jwt.encode(claims, TUTORIAL_SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    refused = items.post("/items/", json={"name": "forged"}, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
