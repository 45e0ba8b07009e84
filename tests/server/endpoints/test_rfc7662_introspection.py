"""RFC 7662 token introspection against a real server: the exact members of DESIGN §4, refresh tokens
active only to their own client, ``{"active": false}`` for anything else (including forged tokens),
and client authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import ChitServer, ModuleServers

PASSWORD = "correct horse battery staple"
INACTIVE = {"active": False}
ACCESS_MEMBERS = {"active", "scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "token_type"}
REFRESH_MEMBERS = {"active", "client_id", "sub", "scope", "exp", "iat"}


# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {"pics": ["images:read", "images:delete"], "tags": ["labels:write"]}


@pytest.fixture(scope="module")
def servers(module_server: ModuleServers) -> dict[str, ChitServer]:
    """The shared server, and one whose access tokens live one second (its tokens are foreign to the first)."""
    return module_server.together(
        "introspection",
        {"main": {"services": SERVICES}, "short": {"env": {"CHIT_ACCESS_TOKEN_TTL": "1"}, "services": SERVICES}},
    )


@pytest.fixture(scope="module")
def chit(servers: dict[str, ChitServer]) -> ChitServer:
    return servers["main"]


class App:
    """A registered confidential client, over plain HTTP."""

    def __init__(self, chit: ChitServer, http: httpx.Client, client_id: str, secret: str | None) -> None:
        self.chit, self.http, self.client_id, self.secret = chit, http, client_id, secret

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        if self.secret is None:
            return self.http.post(self.chit.url + path, data={**data, "client_id": self.client_id})
        return self.http.post(self.chit.url + path, data=data, auth=(self.client_id, self.secret))

    def token(self, **data: str) -> dict[str, Any]:
        response = self.post("/oauth2/token", data)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def client_token(self, **extra: str) -> dict[str, Any]:
        return self.token(grant_type="client_credentials", **extra)

    def login(self, username: str, **extra: str) -> dict[str, Any]:
        return self.token(grant_type="password", username=username, password=PASSWORD, **extra)

    def introspect_response(self, token: str, **extra: str) -> httpx.Response:
        response = self.post("/oauth2/introspect", {"token": token, **extra})
        assert response.headers["cache-control"] == "no-store"
        return response

    def introspect(self, token: str, **extra: str) -> dict[str, Any]:
        response = self.introspect_response(token, **extra)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = response.json()
        return body


def register(chit: ChitServer, http: httpx.Client, client_id: str, *args: str) -> App:
    registered = chit.add_client(client_id, *args)
    return App(chit, http, client_id, registered["client_secret"])


@pytest.fixture(scope="module")
def module_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def resource(chit: ChitServer, module_http: httpx.Client) -> App:
    """A confidential client that introspects other clients' access tokens (a resource server)."""
    return register(chit, module_http, "in-resource-server")


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_active_client_credentials_token_answers_exactly_the_design_members(
    chit: ChitServer, http: httpx.Client, resource: App
) -> None:
    app = register(chit, http, "in-cc-app", "--scope", "pics:images:read", "--scope", "tags:labels:write")
    token = app.client_token()["access_token"]
    answer = resource.introspect(token)
    assert set(answer) == ACCESS_MEMBERS  # no act: nobody acts for anyone; no sid either
    claims = claims_of(token)
    assert answer["active"] is True
    assert answer["token_type"] == "Bearer"
    assert answer["scope"] == "pics:images:read tags:labels:write"
    assert answer["client_id"] == "in-cc-app"
    assert answer["aud"] == ["pics", "tags"]
    assert answer["iss"] == chit.url
    for name in ("sub", "exp", "iat", "jti", "scope", "aud", "iss", "client_id"):
        assert answer[name] == claims[name], name
    assert answer["sub"].startswith("cli_")


def test_active_user_token_answers_exactly_the_design_members(
    chit: ChitServer, http: httpx.Client, resource: App
) -> None:
    user = chit.add_user("in-user", PASSWORD)
    app = register(chit, http, "in-login-app", "--grant", "password", "--grant", "refresh_token")
    token = app.login("in-user")["access_token"]
    answer = resource.introspect(token)
    assert set(answer) == ACCESS_MEMBERS
    assert answer["active"] is True
    assert answer["sub"] == user["id"]
    assert answer["client_id"] == "in-login-app"
    assert answer["scope"] == ""
    assert answer["aud"] == ["chit"]
    assert answer["jti"] == claims_of(token)["jti"]


def test_introspection_works_through_authlib(chit: ChitServer, http: httpx.Client) -> None:
    registered = chit.add_client("in-authlib", "--scope", "pics:images:read")
    with OAuth2Client(
        "in-authlib", registered["client_secret"], token_endpoint_auth_method="client_secret_post", timeout=30
    ) as client:
        token = client.fetch_token(chit.token_url, grant_type="client_credentials")["access_token"]
        response = client.introspect_token(chit.url + "/oauth2/introspect", token=token)
        assert response.status_code == 200
        assert response.json()["active"] is True
        assert response.json()["scope"] == "pics:images:read"


def test_refresh_token_is_active_only_to_its_own_client(chit: ChitServer, http: httpx.Client, resource: App) -> None:
    chit.cli_ok("role", "create", "in-reader", "--permission", "pics:images:read")
    user = chit.add_user("in-refresh-user", PASSWORD, "--role", "in-reader")
    app = register(chit, http, "in-refresh-app", "--grant", "password", "--grant", "refresh_token")
    login = app.login("in-refresh-user")
    refresh_token = login["refresh_token"]

    answer = app.introspect(refresh_token)
    assert set(answer) == REFRESH_MEMBERS
    assert answer["active"] is True
    assert answer["client_id"] == "in-refresh-app"
    assert answer["sub"] == user["id"]
    assert answer["scope"] == "pics:images:read"
    assert isinstance(answer["iat"], int)
    assert isinstance(answer["exp"], int)
    assert answer["exp"] > answer["iat"]

    assert resource.introspect(refresh_token) == INACTIVE
    assert resource.introspect(refresh_token, token_type_hint="refresh_token") == INACTIVE


def test_rotated_refresh_token_is_inactive(chit: ChitServer, http: httpx.Client) -> None:
    chit.add_user("in-rotated-user", PASSWORD)
    app = register(chit, http, "in-rotated-app", "--grant", "password", "--grant", "refresh_token")
    old = app.login("in-rotated-user")["refresh_token"]
    new = app.token(grant_type="refresh_token", refresh_token=old)["refresh_token"]
    assert app.introspect(old) == INACTIVE
    assert app.introspect(new)["active"] is True


def test_token_type_hint_that_is_wrong_still_finds_the_token(
    chit: ChitServer, http: httpx.Client, resource: App
) -> None:
    chit.add_user("in-hint-user", PASSWORD)
    app = register(chit, http, "in-hint-app", "--grant", "password", "--grant", "refresh_token")
    login = app.login("in-hint-user")
    for hint in ("refresh_token", "access_token", "no-such-hint"):
        assert app.introspect(login["access_token"], token_type_hint=hint)["active"] is True, hint
        assert app.introspect(login["refresh_token"], token_type_hint=hint)["active"] is True, hint
        assert resource.introspect(login["access_token"], token_type_hint=hint)["active"] is True, hint


def test_unknown_and_malformed_tokens_answer_exactly_inactive(resource: App) -> None:
    for token in (
        "unknown-opaque-token",
        "a.b.c",
        "not.a.jwt.at.all",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "x" * 5000,
        "\u00e9t\u00e9",
    ):
        assert resource.introspect(token) == INACTIVE, token


def forge(claims: dict[str, Any], header: dict[str, Any], key: Any, alg: str) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def test_token_signed_by_a_foreign_key_with_the_same_kid_is_inactive(
    chit: ChitServer, http: httpx.Client, resource: App
) -> None:
    app = register(chit, http, "in-forgery-target", "--scope", "pics:images:read")
    genuine = app.client_token()["access_token"]
    header = jwt.get_unverified_header(genuine)
    claims = claims_of(genuine)
    claims["scope"] = "pics:images:read pics:images:delete"
    claims["jti"] = "forged-" + claims["jti"]
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(claims, {"kid": header["kid"], "typ": "at+jwt"}, attacker_key, "RS256")
    assert jwt.get_unverified_header(forged)["kid"] == header["kid"]
    assert resource.introspect(forged) == INACTIVE
    assert resource.introspect(genuine)["active"] is True


def test_unsigned_and_algorithm_confused_tokens_are_inactive(
    chit: ChitServer, http: httpx.Client, resource: App
) -> None:
    app = register(chit, http, "in-alg-target", "--scope", "pics:images:read")
    genuine = app.client_token()["access_token"]
    header = jwt.get_unverified_header(genuine)
    claims = claims_of(genuine)

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': header['kid']})}.{b64(claims)}."
    assert resource.introspect(unsigned) == INACTIVE

    # HS256 keyed with the server's public key, the classic algorithm-confusion attack
    jwk = next(k for k in http.get(chit.url + "/.well-known/jwks.json").json()["keys"] if k["kid"] == header["kid"])
    public_pem = (
        jwt.PyJWK(jwk)
        .key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    head = b64({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]})
    signing_input = f"{head}.{b64(claims)}".encode()
    mac = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    confused = signing_input.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert resource.introspect(confused) == INACTIVE

    # the genuine signature over altered claims
    tampered_claims = {**claims, "scope": "pics:images:delete"}
    signature = genuine.rsplit(".", 1)[1]
    tampered = f"{genuine.split('.')[0]}.{b64(tampered_claims)}.{signature}"
    assert resource.introspect(tampered) == INACTIVE


def test_token_from_another_chit_server_is_inactive(
    servers: dict[str, ChitServer], http: httpx.Client, resource: App
) -> None:
    other = servers["short"]
    registered = other.add_client("in-foreign-app", "--scope", "pics:images:read")
    foreign = App(other, http, "in-foreign-app", registered["client_secret"]).client_token()["access_token"]
    assert resource.introspect(foreign) == INACTIVE


def test_expired_access_token_is_inactive(servers: dict[str, ChitServer], http: httpx.Client) -> None:
    short = servers["short"]
    app = register(short, http, "in-expiring-app", "--scope", "pics:images:read")
    # a one-second token may already be past its whole second when first looked at: take one seen active
    for _ in range(10):
        token = app.client_token()
        assert token["expires_in"] == 1
        if app.introspect(token["access_token"])["active"] is True:
            break
    else:
        pytest.fail("no token of the one-second server was ever seen active")
    time.sleep(2.1)
    assert app.introspect(token["access_token"]) == INACTIVE


def test_revoked_access_token_is_inactive_at_once(chit: ChitServer, http: httpx.Client, resource: App) -> None:
    app = register(chit, http, "in-revoking-app", "--scope", "pics:images:read")
    token = app.client_token()["access_token"]
    assert resource.introspect(token)["active"] is True
    assert app.post("/oauth2/revoke", {"token": token}).status_code == 200
    assert resource.introspect(token) == INACTIVE
    assert app.introspect(token) == INACTIVE


def test_disabled_users_tokens_are_inactive(chit: ChitServer, http: httpx.Client, resource: App) -> None:
    chit.add_user("in-disabled-user", PASSWORD)
    app = register(chit, http, "in-disabled-app", "--grant", "password", "--grant", "refresh_token")
    login = app.login("in-disabled-user")
    assert resource.introspect(login["access_token"])["active"] is True
    chit.cli_ok("user", "disable", "in-disabled-user")
    assert resource.introspect(login["access_token"]) == INACTIVE
    assert app.introspect(login["refresh_token"]) == INACTIVE


def test_introspection_requires_client_authentication(chit: ChitServer, http: httpx.Client, resource: App) -> None:
    app = register(chit, http, "in-needs-auth", "--scope", "pics:images:read")
    token = app.client_token()["access_token"]
    url = chit.url + "/oauth2/introspect"

    attempts = {
        "none": http.post(url, data={"token": token}),
        "wrong secret": http.post(url, data={"token": token}, auth=("in-needs-auth", "wrong")),
        "unknown client": http.post(url, data={"token": token}, auth=("in-no-such-client", "wrong")),
        "wrong secret in body": http.post(
            url, data={"token": token, "client_id": "in-needs-auth", "client_secret": "wrong"}
        ),
        "public client": http.post(url, data={"token": token, "client_id": "chit-cli"}),
    }
    for what, response in attempts.items():
        assert response.status_code == 401, what
        assert response.json()["error"] == "invalid_client", what
        assert "active" not in response.json(), what


def test_missing_token_parameter_is_invalid_request(resource: App) -> None:
    response = resource.post("/oauth2/introspect", {"token_type_hint": "access_token"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
