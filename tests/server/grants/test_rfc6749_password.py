"""RFC 6749 §4.3 resource owner password credentials grant, driven with Authlib against a real server.

Covers the public first-party ``chit-cli`` client and confidential clients, what a user's token
carries (DESIGN §4), the identical answer for every failed login, and ``chit user disable`` on a
running server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from helpers import ADMIN_PASSWORD, ChitServer, ModuleServers

TOKEN_MEMBERS = {"access_token", "token_type", "expires_in", "scope"}
PASSWORD = "correct horse battery staple"


# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {
    "docs": ["pages:read"],
    "images": ["files:write"],
    "late": ["things:read"],
    "two": ["a:read", "b:read", "c:read"],
    "capped": ["items:read", "items:delete"],
    "other": ["things:write"],
    "free": ["a:read"],
    "loose": ["b:read", "b:write"],
}


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("password", services=SERVICES)


@pytest.fixture(scope="module")
def jwks(chit: ChitServer) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(chit.url + "/.well-known/jwks.json")


def verify(jwks: jwt.PyJWKClient, chit: ChitServer, token: str) -> dict[str, Any]:
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], issuer=chit.url, options={"verify_aud": False}
    )
    return claims


class Client:
    """An Authlib OAuth2Client that also keeps the raw token responses it received."""

    def __init__(self, chit: ChitServer, client_id: str, secret: str | None, method: str) -> None:
        self.chit = chit
        self.responses: list[httpx.Response] = []
        self.oauth = OAuth2Client(client_id, secret, token_endpoint_auth_method=method, timeout=30)
        self.oauth.register_compliance_hook("access_token_response", self._keep)

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.responses.append(response)
        return response

    @property
    def last(self) -> httpx.Response:
        return self.responses[-1]

    def login(self, username: str, password: str = PASSWORD, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = self.oauth.fetch_token(
            self.chit.token_url, username=username, password=password, **kwargs
        )
        return token

    def refused(self, error: str, username: str, password: str = PASSWORD, **kwargs: Any) -> httpx.Response:
        with pytest.raises(OAuthError) as caught:
            self.login(username, password, **kwargs)
        assert caught.value.error == error, caught.value.description
        response = self.last
        assert response.json()["error"] == error
        assert response.headers["cache-control"] == "no-store"
        return response


@pytest.fixture
def connect(chit: ChitServer) -> Iterator[Any]:
    made: list[Client] = []

    def connect(client_id: str, *args: str, method: str = "client_secret_basic") -> Client:
        if client_id == "chit-cli":
            client = Client(chit, client_id, None, "none")
        else:
            registered = chit.add_client(client_id, *args)
            client = Client(chit, client_id, registered["client_secret"], method)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.oauth.close()


def test_public_first_party_client_gets_a_refresh_token(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    user = chit.add_user("pw-public", PASSWORD)
    client = connect("chit-cli")
    token = client.login("pw-public")

    response = client.last
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == TOKEN_MEMBERS | {"refresh_token"}
    assert body["token_type"] == "Bearer"
    assert token["refresh_token"] == body["refresh_token"]
    claims = verify(jwks, chit, body["access_token"])
    assert body["expires_in"] == claims["exp"] - claims["iat"]
    assert claims["sub"] == user["id"]
    assert claims["client_id"] == "chit-cli"
    assert response.request.content.count(b"client_id=chit-cli") == 1
    assert b"client_secret" not in response.request.content


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_client_with_refresh_grant_gets_a_refresh_token(
    chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient, method: str
) -> None:
    username = f"pw-conf-{method.replace('_', '-')}"
    user = chit.add_user(username, PASSWORD)
    client = connect(f"{username}-app", "--grant", "password", "--grant", "refresh_token", method=method)
    client.login(username)
    body = client.last.json()
    assert set(body) == TOKEN_MEMBERS | {"refresh_token"}
    assert body["refresh_token"]
    claims = verify(jwks, chit, body["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["client_id"] == f"{username}-app"


def test_client_with_only_the_password_grant_gets_no_refresh_token(chit: ChitServer, connect: Any) -> None:
    chit.add_user("pw-no-refresh", PASSWORD)
    client = connect("pw-no-refresh-app", "--grant", "password")
    client.login("pw-no-refresh")
    assert client.last.status_code == 200
    assert set(client.last.json()) == TOKEN_MEMBERS


def test_subject_is_the_user_id_never_the_username(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    user = chit.add_user("pw-subject", PASSWORD)
    assert user["id"].startswith("usr_")
    client = connect("chit-cli")
    first = verify(jwks, chit, client.login("pw-subject")["access_token"])
    second = verify(jwks, chit, client.login("pw-subject")["access_token"])
    assert first["sub"] == second["sub"] == user["id"]
    assert "pw-subject" not in json.dumps(first)  # no claim carries the username


def test_user_without_grants_logs_in_with_no_permissions(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    chit.add_user("pw-nobody", PASSWORD)
    client = connect("chit-cli")
    body = client.login("pw-nobody")
    assert client.last.json()["scope"] == ""
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == ""
    assert claims["aud"] == ["chit"]


def test_role_permissions_come_through(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    chit.cli_ok("role", "create", "pw-editor", "--permission", "docs:pages:read", "--permission", "images:files:write")
    chit.add_user("pw-editor-user", PASSWORD, "--role", "pw-editor")
    client = connect("chit-cli")
    body = client.login("pw-editor-user")
    assert client.last.json()["scope"] == "docs:pages:read images:files:write"
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == "docs:pages:read images:files:write"
    assert claims["aud"] == ["docs", "images"]


def test_role_granted_later_reaches_the_next_login(chit: ChitServer, connect: Any) -> None:
    chit.cli_ok("role", "create", "pw-late", "--permission", "late:things:read")
    chit.add_user("pw-late-user", PASSWORD)
    client = connect("chit-cli")
    assert client.login("pw-late-user")["scope"] == ""
    chit.cli_ok("grant", "user:pw-late-user", "pw-late")
    assert client.login("pw-late-user")["scope"] == "late:things:read"


def test_requested_scope_narrows_and_more_is_invalid_scope(chit: ChitServer, connect: Any) -> None:
    chit.cli_ok("role", "create", "pw-two", "--permission", "two:a:read", "--permission", "two:b:read")
    chit.add_user("pw-two-user", PASSWORD, "--role", "pw-two")
    client = connect("chit-cli")
    assert client.login("pw-two-user", scope="two:b:read")["scope"] == "two:b:read"
    assert client.refused("invalid_scope", "pw-two-user", scope="two:a:read two:c:read").status_code == 400


def test_client_scope_caps_user_tokens(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    chit.cli_ok("role", "create", "pw-wide", "--permission", "capped:items:*", "--permission", "other:things:write")
    chit.add_user("pw-capped-user", PASSWORD, "--role", "pw-wide")
    client = connect("pw-capped-app", "--grant", "password", "--scope", "capped:items:read")
    body = client.login("pw-capped-user")
    assert body["scope"] == "capped:items:read"
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == "capped:items:read"
    assert claims["aud"] == ["capped"]
    # the user holds other:things:write, but the client's cap excludes it
    assert client.refused("invalid_scope", "pw-capped-user", scope="other:things:write").status_code == 400
    assert client.refused("invalid_scope", "pw-capped-user", scope="capped:items:delete").status_code == 400


def test_client_cap_never_adds_what_the_user_lacks(chit: ChitServer, connect: Any) -> None:
    chit.add_user("pw-capped-nobody", PASSWORD)
    client = connect("pw-cap-only-app", "--grant", "password", "--scope", "capped:items:read")
    assert client.login("pw-capped-nobody")["scope"] == ""
    assert client.refused("invalid_scope", "pw-capped-nobody", scope="capped:items:read").status_code == 400


def test_first_party_client_without_scope_does_not_cap(chit: ChitServer, connect: Any) -> None:
    chit.cli_ok("role", "create", "pw-uncapped", "--permission", "free:a:read", "--permission", "loose:b:*")
    chit.add_user("pw-uncapped-user", PASSWORD, "--role", "pw-uncapped")
    expected = "free:a:read loose:b:*"
    assert connect("pw-uncapped-app", "--grant", "password").login("pw-uncapped-user")["scope"] == expected
    assert connect("chit-cli").login("pw-uncapped-user")["scope"] == expected


def test_failed_logins_answer_identically(chit: ChitServer, connect: Any) -> None:
    chit.add_user("pw-victim", PASSWORD)
    chit.add_user("pw-disabled", PASSWORD)
    chit.cli_ok("user", "disable", "pw-disabled")
    client = connect("chit-cli")

    wrong_password = client.refused("invalid_grant", "pw-victim", "wrong password!")
    unknown_user = client.refused("invalid_grant", "pw-nobody-by-this-name", PASSWORD)
    disabled_user = client.refused("invalid_grant", "pw-disabled", PASSWORD)

    def answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
        return response.status_code, response.content, headers

    assert answer(wrong_password)[0] == 400
    assert answer(wrong_password) == answer(unknown_user) == answer(disabled_user)
    assert b"pw-" not in wrong_password.content  # the answer never echoes the username
    # and the right password still works for the account that saw a wrong one
    assert client.login("pw-victim")["access_token"]


def test_client_without_password_grant_is_unauthorized_client(chit: ChitServer, connect: Any) -> None:
    chit.add_user("pw-wrong-client", PASSWORD)
    client = connect("pw-cc-only-app")  # default grant: client_credentials
    assert client.refused("unauthorized_client", "pw-wrong-client").status_code == 400
    client = connect("pw-refresh-only-app", "--grant", "refresh_token")
    assert client.refused("unauthorized_client", "pw-wrong-client").status_code == 400


def test_missing_password_is_invalid_request(chit: ChitServer, http: httpx.Client) -> None:
    chit.add_user("pw-missing", PASSWORD)
    response = http.post(
        chit.token_url, data={"grant_type": "password", "username": "pw-missing", "client_id": "chit-cli"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_super_admin_token_holds_chit_everything(chit: ChitServer, connect: Any, jwks: jwt.PyJWKClient) -> None:
    body = connect("chit-cli").login("admin", ADMIN_PASSWORD)
    assert body["scope"] == "chit:*:*"
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == "chit:*:*"
    assert claims["aud"] == ["chit"]
    assert claims["sub"].startswith("usr_")


def test_disabling_a_user_stops_the_next_login_at_once(chit: ChitServer, connect: Any) -> None:
    chit.add_user("pw-to-disable", PASSWORD)
    client = connect("chit-cli")
    assert client.login("pw-to-disable")["access_token"]
    chit.cli_ok("user", "disable", "pw-to-disable")
    assert client.refused("invalid_grant", "pw-to-disable").status_code == 400
    chit.cli_ok("user", "enable", "pw-to-disable")
    assert client.login("pw-to-disable")["access_token"]
