"""Forged and manipulated tokens: each is refused by ``verify`` and answered 401 invalid_token, never 5xx.

The forgeries are real: built byte by byte with PyJWT, ``hmac`` and ``cryptography`` against the
issuer's actual public key, as an attacker holding the JWKS would build them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from fastapi import FastAPI, Security
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chit import InvalidTokenError, Principal, Verifier
from chit.core.claims import REQUIRED_CLAIMS
from chit.core.jwt import parse_jwks
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
AUDIENCE = "image-store"
SCOPE = ["image-store:images:read"]


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    """One RS256 issuer for the module: the forgeries are built once against its key, and the
    verifier's unknown-kid cool-down spans the module."""
    return TestIssuer(alg="RS256", clock=Clock(1_800_000_000))


@pytest.fixture(scope="module")
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier(AUDIENCE)


@pytest.fixture(scope="module")
def app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/images")
    async def images(principal: Principal = Security(verifier, scopes=SCOPE)) -> dict[str, str]:
        return {"subject": principal.subject}

    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
        yield client


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def rs256(key: rsa.RSAPrivateKey, signing_input: str) -> str:
    return b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))


def compact(header: dict[str, Any], claims: Any, sign: Callable[[str], str]) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{sign(signing_input)}"


class Forge:
    """Builds tokens as an attacker would, around one legitimate issuer."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer
        self.key = issuer.signing_key
        assert isinstance(self.key.private_key, rsa.RSAPrivateKey)
        self.private = self.key.private_key
        self.public_pem = self.key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def header(self, **changes: Any) -> dict[str, Any]:
        header = {"alg": "RS256", "typ": "at+jwt", "kid": self.key.kid}
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims = self.issuer.claims("usr_alice", SCOPE)
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def signed(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """Signed with the issuer's real key: what is wrong is in the content."""
        return compact(header or self.header(), self.claims(**claims), lambda s: rs256(self.private, s))

    def valid(self) -> str:
        return self.signed()


def _noncanonical(last: str) -> str:
    """The same bits with the unused low bit set: decodes to the same bytes, spelled differently."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(last) | 1]


def _raw_signed(f: Forge, payload: bytes) -> str:
    signing_input = f"{b64json(f.header())}.{b64(payload)}"
    return f"{signing_input}.{rs256(f.private, signing_input)}"


def _hs256(secret: bytes) -> Callable[[str], str]:
    return lambda s: b64(hmac.new(secret, s.encode(), hashlib.sha256).digest())


def forgeries(f: Forge) -> dict[str, str]:
    valid = f.valid()
    h, p, s = valid.split(".")
    other = f.signed(jti="another-token")
    escalated = b64json(f.claims(scope="image-store:images:read image-store:images:delete"))
    foreign_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_ec = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(foreign_rsa.public_key(), as_dict=True), "kid": "evil"}
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    ed = ed25519.Ed25519PrivateKey.generate()
    now = int(f.issuer.clock())
    return {
        # signature algorithm attacks
        "alg none": compact(f.header(alg="none"), f.claims(), lambda s: ""),
        "alg None": compact(f.header(alg="None"), f.claims(), lambda s: ""),
        "alg none with the original signature": f"{b64json(f.header(alg='none'))}.{p}.{s}",
        "HS256 keyed with the RSA public key PEM": compact(f.header(alg="HS256"), f.claims(), _hs256(f.public_pem)),
        "HS256 keyed with the public key DER": compact(
            f.header(alg="HS256"),
            f.claims(),
            _hs256(
                f.key.public_key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ),
        ),
        "HS256 keyed with the JWK n": compact(f.header(alg="HS256"), f.claims(), _hs256(f.key.jwk()["n"].encode())),
        "RS512 (not allowed)": jwt.encode(f.claims(), f.private, algorithm="RS512", headers=f.header(alg="RS512")),
        "PS256 (not allowed)": jwt.encode(f.claims(), f.private, algorithm="PS256", headers=f.header(alg="PS256")),
        "ES256 header on the RSA kid": jwt.encode(
            f.claims(), foreign_ec, algorithm="ES256", headers=f.header(alg="ES256")
        ),
        "EdDSA header on the RSA kid": jwt.encode(f.claims(), ed, algorithm="EdDSA", headers=f.header(alg="EdDSA")),
        # keys
        "foreign key under the real kid": compact(f.header(), f.claims(), lambda s: rs256(foreign_rsa, s)),
        "foreign key under its own kid": compact(f.header(kid="evil"), f.claims(), lambda s: rs256(foreign_rsa, s)),
        "weak 1024-bit key under the real kid": compact(f.header(), f.claims(), lambda s: rs256(weak_rsa, s)),
        "embedded jwk": compact(f.header(kid="evil", jwk=attacker_jwk), f.claims(), lambda s: rs256(foreign_rsa, s)),
        "jku pointing elsewhere": f.signed(f.header(jku="https://evil.example/jwks.json")),
        "x5u pointing elsewhere": f.signed(f.header(x5u="https://evil.example/cert.pem")),
        "x5c chain": f.signed(f.header(x5c=["MIIB"])),
        "crit extension": f.signed(f.header(crit=["exp"])),
        "b64 false": f.signed(f.header(b64=False, crit=["b64"])),
        "no kid": f.signed(f.header(kid=None)),
        "kid not a string": f.signed(f.header(kid=7)),
        # signature surgery
        "signature removed": f"{h}.{p}.",
        "signature and dot removed": f"{h}.{p}",
        "payload of another token under this signature": f"{h}.{other.split('.')[1]}.{s}",
        "signature of another token": f"{h}.{p}.{other.split('.')[2]}",
        "tampered payload (scope escalated)": f"{h}.{escalated}.{s}",
        "tampered header (typ dropped)": f"{b64json(f.header(typ=None))}.{p}.{s}",
        "signature bit flipped": f"{h}.{p}.{s[:-6]}{'A' if s[-6] != 'A' else 'B'}{s[-5:]}",
        "signature truncated": f"{h}.{p}.{b64(base64.urlsafe_b64decode(s + '==')[:-6])}",
        "non-canonical base64 in the signature": f"{h}.{p}.{s[:-1]}{_noncanonical(s[-1])}",
        "padded segments": f"{h}=.{p}.{s}",
        # claims, validly signed
        "wrong issuer": f.signed(iss="https://evil.example"),
        "issuer with a trailing slash": f.signed(iss=f.issuer.issuer + "/"),
        "issuer in another case": f.signed(iss=f.issuer.issuer.upper()),
        "wrong audience": f.signed(aud=["billing"]),
        "audience as another string": f.signed(aud="billing"),
        "audience empty": f.signed(aud=[]),
        "typ JWT": f.signed(f.header(typ="JWT")),
        "typ missing": f.signed(f.header(typ=None)),
        "expired": f.signed(exp=now - 61, iat=now - 700),
        "not yet valid (nbf)": f.signed(nbf=now + 120),
        "issued in the future (iat)": f.signed(iat=now + 120),
        "nbf not a number": f.signed(nbf="soon"),
        "exp not a number": f.signed(exp="later"),
        "exp a boolean": f.signed(exp=True),
        "sub a number": f.signed(sub=42),
        "sub empty": f.signed(sub=""),
        "scope a list": f.signed(scope=SCOPE),
        "act not an object": f.signed(act="usr_mallory"),
        "act without sub": f.signed(act={"client_id": "tagging"}),
        **{
            f"missing {name}": f.signed(**{name: None})
            for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope")
        },
        # size and shape
        "oversized (16 KiB + 1)": "a" * (16 * 1024 + 1),
        "oversized but validly signed": f.signed(padding="x" * (16 * 1024)),
        "empty": "",
        "one segment": "abc",
        "four segments": f"{valid}.abc",
        "header not base64": f"!!!.{p}.{s}",
        "header not JSON": f"{b64(b'not json')}.{p}.{s}",
        "header a JSON array": f"{b64json(['alg', 'RS256'])}.{p}.{s}",
        "header deeply nested": f"{b64(b'[' * 5000)}.{p}.{s}",
        "payload not JSON": f"{h}.{b64(b'nope')}.{s}",
        "payload not JSON, validly signed": _raw_signed(f, b"nope"),
        "payload deeply nested, validly signed": _raw_signed(f, b"[" * 5000 + b"]" * 5000),
        "payload a JSON string, validly signed": compact(f.header(), "hello", lambda s: rs256(f.private, s)),
        "non-ASCII": f"{h}.{p}.{s}\u00e9",
        "huge header": f"{b64json({**f.header(), 'x': 'y' * 2000})}.{p}.{s}",
    }


# Which rule refuses each forgery: a forgery refused for another reason than intended is a test bug.
REASONS = {
    "alg none": "algorithm 'none' is not allowed",
    "alg None": "algorithm 'None' is not allowed",
    "alg none with the original signature": "algorithm 'none' is not allowed",
    "HS256 keyed with the RSA public key PEM": "algorithm 'HS256' is not allowed",
    "HS256 keyed with the public key DER": "algorithm 'HS256' is not allowed",
    "HS256 keyed with the JWK n": "algorithm 'HS256' is not allowed",
    "RS512 (not allowed)": "algorithm 'RS512' is not allowed",
    "PS256 (not allowed)": "algorithm 'PS256' is not allowed",
    "ES256 header on the RSA kid": "algorithm does not match its key",
    "EdDSA header on the RSA kid": "algorithm does not match its key",
    "foreign key under the real kid": "signature is invalid",
    "foreign key under its own kid": "unknown key",
    "weak 1024-bit key under the real kid": "signature is invalid",
    "embedded jwk": "forbidden parameters: jwk",
    "jku pointing elsewhere": "forbidden parameters: jku",
    "x5u pointing elsewhere": "forbidden parameters: x5u",
    "x5c chain": "forbidden parameters: x5c",
    "crit extension": "forbidden parameters: crit",
    "b64 false": "forbidden parameters: b64, crit",
    "no kid": "no kid",
    "kid not a string": "no kid",
    "signature removed": "signature is invalid",
    "signature and dot removed": "not a compact JWS",
    "payload of another token under this signature": "signature is invalid",
    "signature of another token": "signature is invalid",
    "tampered payload (scope escalated)": "signature is invalid",
    "tampered header (typ dropped)": "not at+jwt",
    "signature bit flipped": "signature is invalid",
    "signature truncated": "signature is invalid",
    "non-canonical base64 in the signature": "signature is not base64url",
    "padded segments": "header is not base64url",
    "wrong issuer": "another issuer",
    "issuer with a trailing slash": "another issuer",
    "issuer in another case": "another issuer",
    "wrong audience": "not meant for this audience",
    "audience as another string": "not meant for this audience",
    "audience empty": "not meant for this audience",
    "typ JWT": "not at+jwt",
    "typ missing": "not at+jwt",
    "expired": "expired",
    "not yet valid (nbf)": "not yet valid",
    "issued in the future (iat)": "issued in the future",
    "nbf not a number": "wrong types",
    "exp not a number": "wrong types",
    "exp a boolean": "wrong types",
    "sub a number": "wrong types",
    "sub empty": "wrong types",
    "scope a list": "wrong types",
    "act not an object": "wrong types",
    "act without sub": "act claim is malformed",
    **{f"missing {name}": f"lacks required claims: {name}" for name in REQUIRED_CLAIMS},
    "oversized (16 KiB + 1)": "larger than 16384 bytes",
    "oversized but validly signed": "larger than 16384 bytes",
    "empty": "empty",
    "one segment": "not a compact JWS",
    "four segments": "not a compact JWS",
    "header not base64": "header is not base64url",
    "header not JSON": "header is not JSON",
    "header a JSON array": "header is not a JSON object",
    "header deeply nested": "header is too large",
    "payload not JSON": "signature is invalid",
    "payload not JSON, validly signed": "payload is not JSON",
    "payload deeply nested, validly signed": "payload is not JSON",
    "payload a JSON string, validly signed": "payload is not a JSON object",
    "non-ASCII": "not a compact JWS",
    "huge header": "header is too large",
}


@pytest.fixture(scope="module")
def forged(issuer: TestIssuer) -> dict[str, str]:
    return forgeries(Forge(issuer))


FORGERY_NAMES = sorted(REASONS)


def test_every_forgery_has_its_expected_reason() -> None:
    assert sorted(forgeries(Forge(TestIssuer(alg="RS256", clock=Clock(1_800_000_000))))) == FORGERY_NAMES


async def test_the_legitimate_token_passes(issuer: TestIssuer, verifier: Verifier, http: httpx.AsyncClient) -> None:
    token = Forge(issuer).valid()
    principal = await verifier.verify(token)
    assert principal.subject == "usr_alice"
    response = await http.get("/images", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", FORGERY_NAMES)
async def test_forgery_is_refused(name: str, forged: dict[str, str], verifier: Verifier) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(forged[name])
    assert REASONS[name] in caught.value.reason


@pytest.mark.parametrize("name", FORGERY_NAMES)
async def test_forgery_is_answered_401_invalid_token(
    name: str, forged: dict[str, str], http: httpx.AsyncClient
) -> None:
    token = forged[name]
    header = f"Bearer {token}".encode("latin-1")  # sent as bytes: non-ASCII must reach the app too
    response = await http.get("/images", headers={"Authorization": header})
    if not token:
        assert response.status_code == 400  # an empty bearer value is a malformed request (RFC 6750 §3.1)
        assert 'error="invalid_request"' in response.headers["www-authenticate"]
        return
    assert response.status_code == 401, (name, response.status_code, response.text)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"'), challenge


async def test_boundaries_of_the_leeway(issuer: TestIssuer, verifier: Verifier) -> None:
    f = Forge(issuer)
    now = int(issuer.clock())
    await verifier.verify(f.signed(exp=now - 59, iat=now - 600))
    await verifier.verify(f.signed(nbf=now + 59))
    await verifier.verify(f.signed(iat=now + 59))
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(f.signed(exp=now - 60, iat=now - 600))


async def test_unknown_kids_from_forgeries_do_not_hammer_the_issuer(issuer: TestIssuer, verifier: Verifier) -> None:
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    f = Forge(issuer)
    before = verifier.jwks.fetches
    for i in range(50):
        token = compact(f.header(kid=f"evil-{i}"), f.claims(), lambda s: rs256(foreign, s))
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await verifier.verify(token)
    assert verifier.jwks.fetches - before <= 1


def test_algorithm_is_never_taken_from_the_token_header() -> None:
    """Every key verifies with the algorithm it was published with, whatever the header claims."""
    issuer = TestIssuer(alg="RS256", clock=Clock(1_800_000_000))
    keys = parse_jwks(issuer.jwks())
    key = keys[issuer.signing_key.kid]
    assert key.alg == "RS256"
    forged = compact(Forge(issuer).header(alg="HS256"), Forge(issuer).claims(), _hs256(Forge(issuer).public_pem))
    signing_input, _, signature = forged.rpartition(".")
    assert not key.verify(signing_input.encode(), base64.urlsafe_b64decode(signature + "=="))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_tokens_only_ever_raise_invalid_token(data: st.DataObject) -> None:
    issuer = _FUZZ_ISSUER
    token = _FUZZ_TOKEN
    keys = _FUZZ_KEYS
    verifier = _FUZZ_VERIFIER
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "segment", "garbage"]))
    if kind == "garbage":
        mangled = data.draw(st.text(max_size=300))
    elif kind == "segment":
        parts = token.split(".")
        index = data.draw(st.integers(0, 2))
        parts[index] = data.draw(st.one_of(st.text(max_size=80), st.just(b64json(data.draw(_json_values)))))
        mangled = ".".join(parts)
    else:
        at = data.draw(st.integers(0, len(token) - 1))
        char = data.draw(st.characters(codec="ascii"))
        if kind == "replace":
            mangled = token[:at] + char + token[at + 1 :]
        elif kind == "insert":
            mangled = token[:at] + char + token[at:]
        else:
            mangled = token[:at] + token[at + 1 :]
    try:
        verifier.decoder.decode(mangled, keys.get, issuer.clock())
    except InvalidTokenError:
        return
    assert mangled == token or _same_token(mangled, token), mangled


def _same_token(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2] and base64.urlsafe_b64decode(
        a.split(".")[2] + "=="
    ) == base64.urlsafe_b64decode(b.split(".")[2] + "==")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FUZZ_ISSUER = TestIssuer(alg="EdDSA", clock=Clock(1_800_000_000))
_FUZZ_TOKEN = _FUZZ_ISSUER.token("usr_alice", SCOPE)
_FUZZ_KEYS = parse_jwks(_FUZZ_ISSUER.jwks())
_FUZZ_VERIFIER = _FUZZ_ISSUER.verifier(AUDIENCE)
