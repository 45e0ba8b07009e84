"""The bounds of a token exchanged from an API key (DESIGN §4, "API keys"), against a real ``chit serve``.

A key's expiry sends services no revocation event, so what the gateway gets for a key never outlives
it: a JWT's ``exp`` and a chit's ``expires_in`` stop at the key's ``expires_at``. ``audience`` and
``resource`` (RFC 8693 §2.1) narrow the token's ``aud`` to the services named, each one the key's scope
names; an unknown service, or one the key carries nothing of, is 400 ``invalid_target``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    Api,
    ChitServer,
    ModuleServers,
    ServiceClient,
    access_token,
    as_user,
    claims_of,
    register_services,
)

PASSWORD = "api-key-bounds-password"
API_KEY_TYPE = "urn:chit:token-type:api-key"
BISCUIT_TYPE = "urn:chit:token-type:biscuit"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TTL = 600  # the server's default access-token lifetime, well beyond the shortest key
KEY_LIFETIME = 60  # the shortest a key may live


class Edge:
    def __init__(self, chit: ChitServer) -> None:
        self.chit = chit
        chit.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
        secret = chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"]
        chit.cli_ok("grant", "client:gateway", "edge")
        self.gateway = ServiceClient(chit, "gateway", secret)
        self.admin: Api = as_user(chit, "admin", ADMIN_PASSWORD)
        self.users = 0

    def new_owner(self) -> str:
        self.users += 1
        name = f"bounds-owner-{self.users}"
        self.chit.add_user(name, PASSWORD, "--role", "bounds-owner")
        return name

    def key(self, owner: str, *scope: str, expires_in: int | None = None) -> dict[str, Any]:
        """A key created over the admin API (times in epoch seconds), ``api_key`` its secret."""
        body: dict[str, Any] = {"owner": f"user:{owner}", "scope": list(scope)}
        if expires_in is not None:
            body["expires_in"] = expires_in
        response = self.admin.post("/admin/api-keys", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def exchange(self, api_key: str, **params: str) -> httpx.Response:
        return self.gateway.exchange(api_key, subject_token_type=API_KEY_TYPE, **params)


@pytest.fixture(scope="module")
def edge(module_server: ModuleServers) -> Edge:
    chit = module_server("api-key-bounds")
    services = {"image-store": ["images:read"], "tagging": ["tags:write"], "archiver": ["runs:read"]}
    register_services(chit, chit.data_dir.parent, services)
    permissions = ("image-store:images:read", "tagging:tags:write", "archiver:runs:read")
    chit.cli_ok("role", "create", "bounds-owner", *(arg for p in permissions for arg in ("--permission", p)))
    return Edge(chit)


def assert_invalid_target(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_target", body
    assert fragment in body["error_description"], body
    assert "access_token" not in body
    assert response.headers["cache-control"] == "no-store"


# --- never beyond the key --------------------------------------------------------------------------------


def test_a_jwt_from_a_key_without_expiry_lives_the_usual_lifetime(edge: Edge) -> None:
    key = edge.key(edge.new_owner(), "tagging:tags:write")
    assert key["expires_at"] is None
    body = edge.exchange(key["api_key"]).json()
    claims = claims_of(body["access_token"])
    assert claims["exp"] - claims["iat"] == body["expires_in"] == ACCESS_TOKEN_TTL


def test_a_jwt_exchanged_from_a_key_never_outlives_the_key(edge: Edge) -> None:
    key = edge.key(edge.new_owner(), "tagging:tags:write", expires_in=KEY_LIFETIME)
    assert key["expires_at"] == key["created_at"] + KEY_LIFETIME
    answer = edge.exchange(key["api_key"])
    body = answer.json()
    claims = claims_of(access_token(answer))
    assert claims["sid"] == key["id"]
    assert claims["exp"] <= key["expires_at"]
    assert body["expires_in"] == claims["exp"] - claims["iat"] <= KEY_LIFETIME
    assert "refresh_token" not in body


def test_a_chit_exchanged_from_a_key_never_outlives_the_key(edge: Edge) -> None:
    key = edge.key(edge.new_owner(), "tagging:tags:write", expires_in=KEY_LIFETIME)
    asked_at = int(time.time())
    answer = edge.exchange(key["api_key"], requested_token_type=BISCUIT_TYPE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == BISCUIT_TYPE
    assert 0 < body["expires_in"] <= key["expires_at"] - key["created_at"]
    assert asked_at + body["expires_in"] <= key["expires_at"] + 1  # whole seconds on either clock
    introspected = edge.gateway.introspect(body["access_token"])
    assert introspected["active"] is True
    assert introspected["exp"] <= key["expires_at"]


# --- audience and resource ---------------------------------------------------------------------------------


def test_without_a_target_the_token_is_for_every_service_of_the_keys_scope(edge: Edge) -> None:
    key = edge.key(edge.new_owner(), "image-store:images:read", "tagging:tags:write")
    assert claims_of(access_token(edge.exchange(key["api_key"])))["aud"] == ["image-store", "tagging"]


@pytest.mark.parametrize("parameter", ["audience", "resource"])
def test_a_target_the_keys_scope_names_narrows_the_audience_to_it(edge: Edge, parameter: str) -> None:
    key = edge.key(edge.new_owner(), "image-store:images:read", "tagging:tags:write")
    for service in ("tagging", "image-store"):
        answer = edge.exchange(key["api_key"], **{parameter: service})
        claims = claims_of(access_token(answer))
        assert claims["aud"] == [service]
        assert claims["sid"] == key["id"]


def test_both_parameters_repeated_name_each_service(edge: Edge) -> None:
    key = edge.key(edge.new_owner(), "image-store:images:read", "tagging:tags:write", "archiver:runs:read")
    assert claims_of(access_token(edge.exchange(key["api_key"])))["aud"] == ["archiver", "image-store", "tagging"]
    answer = httpx.post(
        edge.chit.token_url,
        content=f"grant_type={TOKEN_EXCHANGE}&subject_token={key['api_key']}&subject_token_type={API_KEY_TYPE}"
        "&audience=tagging&resource=image-store",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=edge.gateway.auth,
        timeout=30,
    )
    assert claims_of(access_token(answer))["aud"] == ["image-store", "tagging"]


@pytest.mark.parametrize("parameter", ["audience", "resource"])
def test_an_unknown_service_is_invalid_target(edge: Edge, parameter: str) -> None:
    key = edge.key(edge.new_owner(), "tagging:tags:write")
    assert_invalid_target(edge.exchange(key["api_key"], **{parameter: "no-such-service"}), "no registered service")
    assert_invalid_target(edge.exchange(key["api_key"], **{parameter: "https://evil.example/"}), "no registered")


@pytest.mark.parametrize("parameter", ["audience", "resource"])
def test_a_service_the_key_carries_nothing_of_is_invalid_target(edge: Edge, parameter: str) -> None:
    key = edge.key(edge.new_owner(), "image-store:images:read", "tagging:tags:write")
    # the owner holds archiver:runs:read; the key does not carry it
    assert_invalid_target(edge.exchange(key["api_key"], **{parameter: "archiver"}), "names no permission of 'archiver'")
    # nor one the requested scope leaves out
    narrowed = edge.exchange(key["api_key"], scope="image-store:images:read", **{parameter: "tagging"})
    assert_invalid_target(narrowed, "names no permission of 'tagging'")
