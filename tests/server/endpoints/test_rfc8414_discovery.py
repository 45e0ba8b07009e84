"""RFC 8414 metadata and the RFC 7517 JWKS of a real server, read the way off-the-shelf clients read
them (PyJWT's PyJWKClient, Authlib), key rotation as ``chit keys rotate`` does it, the three signing
algorithms, and the ``--issuer`` rule of DESIGN §4.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from helpers import ADMIN_PASSWORD, ChitServer, ModuleServers, free_port

WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
JWKS_PATH = "/.well-known/jwks.json"
JWKS_MAX_AGE = 120
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
PUBLIC_MEMBERS = {
    "RSA": {"kty", "n", "e"},
    "EC": {"kty", "crv", "x", "y"},
    "OKP": {"kty", "crv", "x"},
}


# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {"disc": ["items:read"]}


@pytest.fixture(scope="module")
def servers(module_server: ModuleServers) -> dict[str, ChitServer]:
    """``main`` with a configured issuer that is not the address it is reached at; ``eddsa`` signing
    with Ed25519 from its first start; ``es256`` that will be rotated to ES256."""
    port = free_port()
    return module_server.together(
        "discovery",
        {
            "main": {
                "port": port,
                "env": {"CHIT_JWKS_MAX_AGE": str(JWKS_MAX_AGE)},
                "serve_args": ("--issuer", f"http://localhost:{port}"),
                "services": SERVICES,
            },
            "eddsa": {"serve_args": ("--signing-alg", "EdDSA"), "services": SERVICES},
            "es256": {"services": SERVICES},
        },
    )


@pytest.fixture(scope="module")
def chit(servers: dict[str, ChitServer]) -> ChitServer:
    return servers["main"]


@pytest.fixture(scope="module")
def issuer(chit: ChitServer) -> str:
    return f"http://localhost:{chit.port}"


def metadata(http: httpx.Client, server: ChitServer, path: str = WELL_KNOWN[0], **headers: str) -> dict[str, Any]:
    response = http.get(server.url + path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def client_token(server: ChitServer, http: httpx.Client, client_id: str, *scope: str) -> str:
    args = [a for p in scope for a in ("--scope", p)]
    registered = server.add_client(client_id, *args)
    response = http.post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client_id, registered["client_secret"]),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def published_kids(http: httpx.Client, server: ChitServer) -> list[str]:
    return [key["kid"] for key in http.get(server.url + JWKS_PATH).json()["keys"]]


def wait_until_published(http: httpx.Client, server: ChitServer, kid: str) -> None:
    """The server notices a rewritten key set within a second, without a restart; allow for a busy machine."""
    deadline = time.monotonic() + 10
    while kid not in published_kids(http, server):
        assert time.monotonic() < deadline, f"key {kid} was not published"
        time.sleep(0.1)


def verify_with_jwks(server: ChitServer, token: str, issuer: str, audience: str, alg: str) -> dict[str, Any]:
    jwks = jwt.PyJWKClient(server.url + JWKS_PATH, cache_keys=False)
    signing_key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(token, signing_key.key, algorithms=[alg], issuer=issuer, audience=audience)
    return claims


def test_both_documents_are_identical_and_carry_the_design_members(
    chit: ChitServer, http: httpx.Client, issuer: str
) -> None:
    documents = [metadata(http, chit, path) for path in WELL_KNOWN]
    assert documents[0] == documents[1]
    doc = documents[0]
    assert doc["issuer"] == issuer
    assert doc["token_endpoint"] == issuer + "/oauth2/token"
    assert doc["jwks_uri"] == issuer + JWKS_PATH
    assert doc["introspection_endpoint"] == issuer + "/oauth2/introspect"
    assert doc["revocation_endpoint"] == issuer + "/oauth2/revoke"
    assert {"client_credentials", "password", "refresh_token"} <= set(doc["grant_types_supported"])
    assert {"client_secret_basic", "client_secret_post"} <= set(doc["token_endpoint_auth_methods_supported"])
    assert doc["biscuit_public_keys"]
    for key in doc["biscuit_public_keys"]:
        assert key.startswith("ed25519/")
        assert len(key.removeprefix("ed25519/")) == 64
        int(key.removeprefix("ed25519/"), 16)


def test_issuer_is_not_influenced_by_request_headers(chit: ChitServer, http: httpx.Client, issuer: str) -> None:
    baseline = metadata(http, chit)
    spoofed = [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/evil"},
        {"Forwarded": "host=evil.example;proto=https"},
        {"Host": "evil.example:8443", "X-Forwarded-Host": "other.example", "X-Forwarded-Proto": "https"},
    ]
    for headers in spoofed:
        for path in WELL_KNOWN:
            assert metadata(http, chit, path, **headers) == baseline, headers
    assert baseline["issuer"] == issuer

    # and the tokens it issues under such headers carry the configured issuer too
    registered = chit.add_client("disc-spoofed-host", "--scope", "disc:items:read")
    response = http.post(
        chit.token_url,
        data={"grant_type": "client_credentials"},
        auth=("disc-spoofed-host", registered["client_secret"]),
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 200, response.text
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["iss"] == issuer


def test_authlib_uses_the_discovered_token_endpoint(chit: ChitServer, http: httpx.Client, issuer: str) -> None:
    doc = metadata(http, chit)
    registered = chit.add_client("disc-authlib", "--scope", "disc:items:read")
    with OAuth2Client(
        "disc-authlib", registered["client_secret"], token_endpoint=doc["token_endpoint"], timeout=30
    ) as client:
        token = client.fetch_token(grant_type="client_credentials")
    assert token["scope"] == "disc:items:read"
    claims = verify_with_jwks(chit, token["access_token"], issuer, "disc", "RS256")
    assert claims["client_id"] == "disc-authlib"


def test_pyjwkclient_verifies_a_real_token(chit: ChitServer, http: httpx.Client, issuer: str) -> None:
    token = client_token(chit, http, "disc-pyjwk", "disc:items:read")
    jwks_uri = metadata(http, chit)["jwks_uri"]
    jwks = jwt.PyJWKClient(jwks_uri)
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwks.get_signing_key(kid)
    assert key.key_id == kid
    claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer=issuer, audience="disc")
    assert claims["client_id"] == "disc-pyjwk"
    assert claims["scope"] == "disc:items:read"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=["RS256"], issuer=issuer, audience="other-service")


def test_jwks_publishes_only_public_members(servers: dict[str, ChitServer], http: httpx.Client) -> None:
    servers["eddsa"].cli_ok("keys", "rotate")  # a second, upcoming key in the set
    for name, server in servers.items():
        response = http.get(server.url + JWKS_PATH)
        assert response.status_code == 200
        keys = response.json()["keys"]
        assert keys, name
        kids = [key["kid"] for key in keys]
        assert len(kids) == len(set(kids)), name
        for key in keys:
            assert not PRIVATE_MEMBERS & set(key), (name, key)
            assert set(key) == PUBLIC_MEMBERS[key["kty"]] | {"kid", "use", "alg"}, (name, key)
            assert key["use"] == "sig"
            assert key["alg"] in ("RS256", "ES256", "EdDSA")
            assert isinstance(key["kid"], str)
            assert key["kid"]


def test_jwks_is_cacheable_for_the_configured_max_age(chit: ChitServer, http: httpx.Client) -> None:
    response = http.get(chit.url + JWKS_PATH)
    directives = [d.strip() for d in response.headers["cache-control"].split(",")]
    assert f"max-age={JWKS_MAX_AGE}" in directives
    assert "no-store" not in directives


def test_keys_rotate_publishes_at_once_and_old_tokens_still_verify(
    chit: ChitServer, http: httpx.Client, issuer: str
) -> None:
    before = client_token(chit, http, "disc-rotate-before", "disc:items:read")
    rotated_at = datetime.now(UTC)
    rotated = chit.cli_ok("keys", "rotate", "--json").json()
    new_kid, current_kid = rotated["kid"], rotated["previous_kid"]
    assert new_kid != current_kid
    # it signs only once every JWKS cache (max-age as the server advertises it) can hold it
    assert datetime.fromisoformat(rotated["signs_from"]) >= rotated_at + timedelta(seconds=JWKS_MAX_AGE)
    wait_until_published(http, chit, new_kid)
    assert current_kid in published_kids(http, chit)

    # the new key is announced, not yet used: JWKS caches need max-age to learn it
    after = client_token(chit, http, "disc-rotate-after", "disc:items:read")
    assert jwt.get_unverified_header(after)["kid"] == current_kid
    for token in (before, after):
        assert verify_with_jwks(chit, token, issuer, "disc", "RS256")["iss"] == issuer


def test_keys_rotate_now_signs_with_the_new_key_and_keeps_the_old_published(
    chit: ChitServer, http: httpx.Client, issuer: str
) -> None:
    before = client_token(chit, http, "disc-now-before", "disc:items:read")
    old_kid = jwt.get_unverified_header(before)["kid"]
    rotated = chit.cli_ok("keys", "rotate", "--now", "--json").json()
    new_kid = rotated["kid"]
    assert new_kid != old_kid
    wait_until_published(http, chit, new_kid)

    after = client_token(chit, http, "disc-now-after", "disc:items:read")
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert old_kid in published_kids(http, chit)
    assert verify_with_jwks(chit, before, issuer, "disc", "RS256")["client_id"] == "disc-now-before"
    assert verify_with_jwks(chit, after, issuer, "disc", "RS256")["client_id"] == "disc-now-after"


def test_eddsa_server_tokens_verify_with_pyjwkclient(servers: dict[str, ChitServer], http: httpx.Client) -> None:
    server = servers["eddsa"]
    token = client_token(server, http, "disc-eddsa", "disc:items:read")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    jwk = next(k for k in http.get(server.url + JWKS_PATH).json()["keys"] if k["kid"] == header["kid"])
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    claims = verify_with_jwks(server, token, server.url, "disc", "EdDSA")
    assert claims["client_id"] == "disc-eddsa"
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify_with_jwks(server, token, server.url, "disc", "RS256")


def test_rotating_to_es256_issues_tokens_that_verify_with_pyjwkclient(
    servers: dict[str, ChitServer], http: httpx.Client
) -> None:
    server = servers["es256"]
    before = client_token(server, http, "disc-es256-before", "disc:items:read")
    assert jwt.get_unverified_header(before)["alg"] == "RS256"
    rotated = server.cli_ok("keys", "rotate", "--now", "--alg", "ES256", "--json").json()
    assert rotated["alg"] == "ES256"
    wait_until_published(http, server, rotated["kid"])

    after = client_token(server, http, "disc-es256-after", "disc:items:read")
    header = jwt.get_unverified_header(after)
    assert header["alg"] == "ES256"
    assert header["kid"] == rotated["kid"]
    jwk = next(k for k in http.get(server.url + JWKS_PATH).json()["keys"] if k["kid"] == rotated["kid"])
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    assert verify_with_jwks(server, after, server.url, "disc", "ES256")["client_id"] == "disc-es256-after"
    assert verify_with_jwks(server, before, server.url, "disc", "RS256")["client_id"] == "disc-es256-before"


@pytest.mark.parametrize("bad_issuer", ["http://example.com", "http://localhost.example.com:8700"])
def test_serve_refuses_a_plain_http_issuer_off_loopback(tmp_path: Path, bad_issuer: str) -> None:
    env = {**os.environ, "CHIT_ADMIN_PASSWORD": ADMIN_PASSWORD}
    args = ["--issuer", bad_issuer, "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [sys.executable, "-m", "chit", "serve", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert bad_issuer in message
    assert "https" in message
    assert "Traceback" not in message
