"""Delegation as outside clients see it: Authlib's ``OAuth2Client`` and ``AsyncOAuth2Client`` perform
the RFC 8693 exchange, and PyJWT alone, with the published JWKS, verifies the token and its ``act``."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client
from helpers import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, ChitServer, ModuleServers, register_manifest, user_token

PASSWORD = "interop-password-1"
IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:write" = "Write"
[roles]
owner = ["images:write"]
[on_behalf]
permissions = ["tagging:tags:write", "image-store:images:write"]
"""
TAGGING = """\
id = "tagging"
[permissions]
"tags:write" = "Write tags"
[roles]
editor = ["tags:write"]
[on_behalf]
permissions = ["image-store:images:write"]
"""


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("interop")
    for name, text in (("image-store", IMAGE_STORE), ("tagging", TAGGING)):
        secret = register_manifest(server, server.data_dir.parent, name, text)
        setattr(server, name.replace("-", "_") + "_secret", secret)
    server.add_user("alice", PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    return server


def verify(chit: ChitServer, token: str, audience: str) -> dict[str, Any]:
    """PyJWT and nothing of chit: the JWKS, the signature, issuer, audience and lifetime."""
    key = jwt.PyJWKClient(chit.url + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256", "EdDSA"],
        audience=audience,
        issuer=chit.url,
        options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
    )
    return claims


def test_authlib_exchanges_and_pyjwt_verifies_the_chain(chit: ChitServer) -> None:
    user = user_token(chit, "alice", PASSWORD)
    with OAuth2Client("image-store", chit.image_store_secret, timeout=30) as client:  # type: ignore[attr-defined]
        first = client.fetch_token(
            chit.token_url,
            grant_type=TOKEN_EXCHANGE,
            subject_token=user,
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience="tagging",
        )
    assert first["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert first["token_type"] == "Bearer"
    claims = verify(chit, first["access_token"], "tagging")
    assert claims["act"]["client_id"] == "image-store"
    assert claims["sub"] == verify(chit, user, "image-store")["sub"]

    async def second_hop() -> dict[str, Any]:
        async with AsyncOAuth2Client("tagging", chit.tagging_secret, timeout=30) as client:  # type: ignore[attr-defined]
            token: dict[str, Any] = await client.fetch_token(
                chit.token_url,
                grant_type=TOKEN_EXCHANGE,
                subject_token=first["access_token"],
                subject_token_type=ACCESS_TOKEN_TYPE,
                audience="image-store",
            )
            return token

    second = asyncio.run(second_hop())
    claims = verify(chit, second["access_token"], "image-store")
    assert claims["scope"] == "image-store:images:write"
    assert [claims["act"]["client_id"], claims["act"]["act"]["client_id"]] == ["tagging", "image-store"]
    with pytest.raises(jwt.InvalidAudienceError):
        verify(chit, second["access_token"], "tagging")  # addressed to the image store alone


def test_authlib_sees_the_rfc_error_of_a_refused_exchange(chit: ChitServer) -> None:
    client = OAuth2Client("tagging", chit.tagging_secret, timeout=30)  # type: ignore[attr-defined]
    with client, pytest.raises(OAuthError) as refused:
        client.fetch_token(
            chit.token_url, grant_type=TOKEN_EXCHANGE, subject_token="garbage", subject_token_type=ACCESS_TOKEN_TYPE
        )
    assert refused.value.error == "invalid_request"
