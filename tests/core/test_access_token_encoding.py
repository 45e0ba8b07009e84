"""``encode_access_token`` writes, byte for byte, the JWT that PyJWT's ``jwt.encode`` writes for the same
claims, key and header (RS256 and EdDSA sign deterministically; an ES256 signature differs every time, so
there PyJWT verifies it instead), and the result carries the RFC 9068 header."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from chit.core.claims import AccessTokenClaims
from chit.core.jwt import TOKEN_TYPE, encode_access_token
from chit.core.keys import new_signing_key

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def claims(**changes: object) -> AccessTokenClaims:
    values: dict[str, object] = {
        "iss": "http://127.0.0.1:8700",
        "sub": "usr_abc",
        "aud": ("image-store", "tagging"),
        "exp": 1_700_000_300,
        "iat": 1_700_000_000,  # in the past: PyJWT checks iat
        "jti": "tok_123",
        "client_id": "chit-cli",
        "scope": ("image-store:images:read", "tagging:tags:write"),
        "act": None,
        "sid": None,
    }
    values.update(changes)
    return AccessTokenClaims(**values)  # type: ignore[arg-type]


CASES = [
    claims(),
    claims(act={"sub": "cli_x", "client_id": "image-store", "act": {"sub": "cli_y"}}, sid="rtf_1"),
    claims(sub="usr_é", scope=("ünïcode:x:y",)),  # escaped as PyJWT escapes it
]


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
@pytest.mark.parametrize("case", CASES)
def test_the_token_is_what_pyjwt_writes(alg: str, case: AccessTokenClaims) -> None:
    key = new_signing_key(alg, NOW)  # type: ignore[arg-type]
    expected = jwt.encode(case.to_dict(), key.private_key, algorithm=alg, headers={"typ": TOKEN_TYPE, "kid": key.kid})
    assert encode_access_token(case, key) == expected


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_pyjwt_verifies_the_token_and_reads_the_rfc_9068_header(alg: str) -> None:
    key = new_signing_key(alg, NOW)  # type: ignore[arg-type]
    token = encode_access_token(CASES[1], key)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    decoded = jwt.decode(
        token, key.private_key.public_key(), algorithms=[alg], audience="tagging", options={"verify_exp": False}
    )
    assert decoded == CASES[1].to_dict()
