"""Signing keys for access tokens, their JWK form (RFC 7517) and the key ring's timeline.

A key ring is a list of keys ordered by ``signs_from``. At any instant the signing key is the newest
key whose ``signs_from`` has passed; a key is published in the JWKS from its creation until every
token it can have signed has expired (``retention`` after the next key took over). Publishing a key
before it signs is what lets ``chit keys rotate`` change keys without any verifier missing one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from chit.errors import ConfigurationError

Algorithm = Literal["RS256", "ES256", "EdDSA"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def check_algorithm(alg: str) -> Algorithm:
    for known in ALGORITHMS:
        if alg == known:
            return known
    raise ConfigurationError(f"unsupported signing algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}")


def generate_private_key(alg: Algorithm) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def private_key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(pem: bytes, alg: Algorithm) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    expected: type[Any] = {
        "RS256": rsa.RSAPrivateKey,
        "ES256": ec.EllipticCurvePrivateKey,
        "EdDSA": ed25519.Ed25519PrivateKey,
    }[alg]
    if not isinstance(key, expected):
        raise ConfigurationError(f"key file does not hold a {alg} key")
    return key  # type: ignore[no-any-return]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public members of a key as a JWK (RFC 7517 / 7518 / 8037), without kid/use/alg."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(point.x.to_bytes(32, "big")),
            "y": _b64(point.y.to_bytes(32, "big")),
        }
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), used as the key id: unique and derived from the key."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: Algorithm
    private_key: PrivateKey
    created_at: datetime
    signs_from: datetime

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        return {**public_jwk(self.public_key), "kid": self.kid, "use": "sig", "alg": self.alg}

    def __repr__(self) -> str:  # never let the private key reach a log
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r}, signs_from={self.signs_from.isoformat()})"


def new_signing_key(alg: Algorithm, now: datetime, signs_from: datetime | None = None) -> SigningKey:
    private_key = generate_private_key(alg)
    kid = thumbprint(public_jwk(private_key.public_key()))
    return SigningKey(kid, alg, private_key, now, signs_from or now)


@dataclass(frozen=True)
class KeyRing:
    """The signing keys in the order they take over (oldest first)."""

    keys: tuple[SigningKey, ...]
    retention: timedelta

    @classmethod
    def of(cls, keys: Sequence[SigningKey], retention: timedelta) -> KeyRing:
        return cls(tuple(sorted(keys, key=lambda k: (k.signs_from, k.created_at))), retention)

    def signing_key(self, now: datetime) -> SigningKey:
        active = [k for k in self.keys if k.signs_from <= now]
        if not active:
            raise ConfigurationError("no signing key is active yet")
        return active[-1]

    def superseded_at(self, key: SigningKey, now: datetime) -> datetime | None:
        index = self.keys.index(key)
        for later in self.keys[index + 1 :]:
            if later.signs_from <= now:
                return later.signs_from
        return None

    def published(self, now: datetime) -> list[SigningKey]:
        """Keys a verifier must know: upcoming, current, and retired ones whose tokens may live on."""
        result = []
        for key in self.keys:
            ended = self.superseded_at(key, now)
            if ended is None or ended + self.retention > now:
                result.append(key)
        return list(reversed(result))  # newest first

    def find(self, kid: str, now: datetime) -> SigningKey | None:
        for key in self.published(now):
            if key.kid == kid:
                return key
        return None

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.jwk() for k in self.published(now)]}
