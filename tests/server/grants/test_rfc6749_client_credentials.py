"""RFC 6749 §4.4 client credentials grant, driven with Authlib's httpx OAuth2Client against a real server.

Token responses and tokens are checked against DESIGN §4: the exact response members, the JWT
profile (RFC 9068), the permissions a client's token carries and the RFC 6749 §5.2 errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from helpers import ChitServer, ModuleServers

TOKEN_MEMBERS = {"access_token", "token_type", "expires_in", "scope"}
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {
    "svc-a": ["items:read"],
    "svc-b": ["items:read"],
    "svc-c": ["things:write"],
    "svc-r": ["docs:read"],
    "svc-s": ["docs:list"],
    "svc-t": ["docs:write"],
    "svc-n": ["a:read", "a:delete"],
    "svc-m": ["b:write"],
    "svc-w": ["items:read", "photos:read"],
    "svc-x": ["items:read"],
    "other": ["a:read"],
}


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("client-credentials", services=SERVICES)


@pytest.fixture(scope="module")
def jwks(chit: ChitServer) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(chit.url + "/.well-known/jwks.json")


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

    def token(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("grant_type", "client_credentials")
        token: dict[str, Any] = self.oauth.fetch_token(self.chit.token_url, **kwargs)
        return token

    def refused(self, error: str, **kwargs: Any) -> httpx.Response:
        with pytest.raises(OAuthError) as caught:
            self.token(**kwargs)
        assert caught.value.error == error, caught.value.description
        response = self.last
        assert response.json()["error"] == error
        assert response.headers["cache-control"] == "no-store"
        return response

    def close(self) -> None:
        self.oauth.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def connect(chit: ChitServer, clients: list[Client]) -> Any:
    def connect(client_id: str, *args: str, method: str = "client_secret_basic") -> Client:
        registered = chit.add_client(client_id, *args)
        client = Client(chit, client_id, registered["client_secret"], method)
        clients.append(client)
        return client

    return connect


def verify(jwks: jwt.PyJWKClient, chit: ChitServer, token: str) -> dict[str, Any]:
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], issuer=chit.url, options={"verify_aud": False}
    )
    return claims


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_token_response_has_exactly_the_design_members(
    connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer, method: str
) -> None:
    client = connect(f"cc-members-{method.replace('_', '-')}", "--scope", "svc-a:items:read", method=method)
    token = client.token()

    response = client.last
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_MEMBERS  # no refresh_token for client_credentials (RFC 6749 §4.4.3)
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "svc-a:items:read"
    assert token["access_token"] == body["access_token"]
    assert response.headers["cache-control"] == "no-store"
    claims = verify(jwks, chit, body["access_token"])
    assert body["expires_in"] == claims["exp"] - claims["iat"]
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_authlib_sends_the_chosen_authentication_method(connect: Any, method: str) -> None:
    client = connect(f"cc-method-{method.replace('_', '-')}", "--scope", "svc-a:items:read", method=method)
    client.token()
    request = client.last.request
    if method == "client_secret_basic":
        assert request.headers["authorization"].startswith("Basic ")
        assert b"client_secret" not in request.content
    else:
        assert "authorization" not in request.headers
        assert b"client_secret=" in request.content


def test_access_token_header_is_the_rfc9068_profile(connect: Any, chit: ChitServer, http: httpx.Client) -> None:
    client = connect("cc-header", "--scope", "svc-a:items:read")
    token = client.token()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    published = {key["kid"] for key in http.get(chit.url + "/.well-known/jwks.json").json()["keys"]}
    assert header["kid"] in published


def test_access_token_claims(connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer) -> None:
    client = connect("cc-claims", "--scope", "svc-c:things:write", "--scope", "svc-b:items:read")
    before = int(time.time())
    token = client.token()["access_token"]
    claims = verify(jwks, chit, token)

    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"}
    assert claims["iss"] == chit.url
    assert claims["client_id"] == "cc-claims"
    assert claims["sub"].startswith("cli_")
    assert claims["sub"] != "cc-claims"
    assert claims["aud"] == ["svc-b", "svc-c"]
    assert claims["scope"] == "svc-b:items:read svc-c:things:write"
    assert isinstance(claims["jti"], str)
    assert claims["jti"]
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5
    assert claims["exp"] > claims["iat"]

    again = verify(jwks, chit, client.token()["access_token"])
    assert again["sub"] == claims["sub"]  # a stable id, the same for every token of the client


def test_subject_differs_between_clients(connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer) -> None:
    first = verify(jwks, chit, connect("cc-subject-1").token()["access_token"])
    second = verify(jwks, chit, connect("cc-subject-2").token()["access_token"])
    assert first["sub"] != second["sub"]
    assert first["sub"].startswith("cli_")
    assert second["sub"].startswith("cli_")


def test_client_without_permissions_gets_empty_scope_and_chit_audience(
    connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer
) -> None:
    client = connect("cc-nothing")
    body = client.token()
    assert client.last.json()["scope"] == ""
    assert body["scope"] == ""
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == ""
    assert claims["aud"] == ["chit"]


def test_jti_is_unique_per_token(connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer) -> None:
    client = connect("cc-jti", "--scope", "svc-a:items:read")
    jtis = [verify(jwks, chit, client.token()["access_token"])["jti"] for _ in range(5)]
    assert len(set(jtis)) == 5


def test_default_scope_is_the_scope_set_plus_role_permissions(
    connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer
) -> None:
    chit.cli_ok("role", "create", "cc-role-reader", "--permission", "svc-r:docs:read")
    client = connect("cc-with-role", "--scope", "svc-s:docs:list")
    assert client.token()["scope"] == "svc-s:docs:list"

    chit.cli_ok("grant", "client:cc-with-role", "cc-role-reader")
    body = client.token()
    assert body["scope"] == "svc-r:docs:read svc-s:docs:list"
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == "svc-r:docs:read svc-s:docs:list"
    assert claims["aud"] == ["svc-r", "svc-s"]


def test_role_permissions_reach_a_client_without_scope_set(connect: Any, chit: ChitServer) -> None:
    chit.cli_ok("role", "create", "cc-role-writer", "--permission", "svc-t:docs:write")
    client = connect("cc-role-only")
    chit.cli_ok("grant", "client:cc-role-only", "cc-role-writer")
    assert client.token()["scope"] == "svc-t:docs:write"


def test_requested_scope_narrows_the_token(connect: Any, jwks: jwt.PyJWKClient, chit: ChitServer) -> None:
    client = connect("cc-narrow", "--scope", "svc-n:a:read", "--scope", "svc-m:b:write")
    body = client.token(scope="svc-n:a:read")
    assert client.last.json()["scope"] == "svc-n:a:read"
    claims = verify(jwks, chit, body["access_token"])
    assert claims["scope"] == "svc-n:a:read"
    assert claims["aud"] == ["svc-n"]


def test_requesting_more_than_held_is_invalid_scope(connect: Any) -> None:
    client = connect("cc-wider", "--scope", "svc-n:a:read")
    response = client.refused("invalid_scope", scope="svc-n:a:read svc-n:a:delete")
    assert response.status_code == 400
    response = client.refused("invalid_scope", scope="other:a:read")
    assert response.status_code == 400


def test_wildcard_grant_covers_narrower_requests_only(connect: Any) -> None:
    client = connect("cc-wildcard", "--scope", "svc-w:items:*")
    assert client.token()["scope"] == "svc-w:items:*"
    assert client.token(scope="svc-w:items:read")["scope"] == "svc-w:items:read"
    assert client.token(scope="svc-w:items:*")["scope"] == "svc-w:items:*"
    assert client.refused("invalid_scope", scope="svc-w:*:*").status_code == 400
    assert client.refused("invalid_scope", scope="svc-w:photos:read").status_code == 400
    assert client.refused("invalid_scope", scope="svc-x:items:read").status_code == 400


def test_malformed_scope_value_is_invalid_scope(connect: Any) -> None:
    client = connect("cc-malformed-scope", "--scope", "svc-a:items:read")
    assert client.refused("invalid_scope", scope="not-a-permission").status_code == 400


def test_public_client_is_unauthorized_for_client_credentials(chit: ChitServer, clients: list[Client]) -> None:
    for client_id in ("chit-cli", "cc-public"):
        if client_id != "chit-cli":
            chit.add_client(client_id, "--public", "--grant", "password")
        client = Client(chit, client_id, None, "none")
        clients.append(client)
        response = client.refused("unauthorized_client")
        assert response.status_code == 400
    # and no public client can be registered for it
    refused = chit.cli("client", "add", "cc-public-cc", "--public", "--grant", "client_credentials")
    assert refused.exit_code == 1


def test_client_without_the_grant_is_unauthorized_client(connect: Any) -> None:
    client = connect("cc-password-only", "--grant", "password")
    assert client.refused("unauthorized_client").status_code == 400


def test_unknown_grant_type_is_unsupported_grant_type(connect: Any) -> None:
    client = connect("cc-unknown-grant", "--scope", "svc-a:items:read")
    response = client.refused("unsupported_grant_type", grant_type="urn:example:made-up")
    assert response.status_code == 400


@pytest.mark.parametrize("grant_type", ["authorization_code", "implicit", "CLIENT_CREDENTIALS"])
def test_other_grant_types_are_unsupported(chit: ChitServer, http: httpx.Client, grant_type: str) -> None:
    registered = chit.add_client(f"cc-unsupported-{grant_type.lower().replace('_', '-')}")
    response = http.post(
        chit.token_url,
        data={"grant_type": grant_type, "code": "x", "redirect_uri": "http://127.0.0.1/cb"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert response.headers["cache-control"] == "no-store"


def test_missing_grant_type_is_invalid_request(chit: ChitServer, http: httpx.Client) -> None:
    registered = chit.add_client("cc-no-grant-type", "--scope", "svc-a:items:read")
    response = http.post(
        chit.token_url,
        data={"scope": "svc-a:items:read"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.json()


def test_wrong_secret_is_invalid_client(chit: ChitServer, clients: list[Client]) -> None:
    chit.add_client("cc-wrong-secret", "--scope", "svc-a:items:read")
    for method in AUTH_METHODS:
        client = Client(chit, "cc-wrong-secret", "not-the-secret", method)
        clients.append(client)
        response = client.refused("invalid_client")
        assert response.status_code == 401
