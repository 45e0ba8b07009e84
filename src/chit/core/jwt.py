"""JWT access tokens, RFC 9068 profile. The only module that imports PyJWT.

Secure defaults live in the signatures: the algorithm comes from the key the ``kid`` names, never
from the token; ``typ`` must be ``at+jwt``; header parameters that point elsewhere for keys
(``jku``, ``x5u``, ``jwk``, ``x5c``) or demand extensions (``crit``) are refused; tokens above
``max_size`` bytes are refused before any decoding.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import Algorithm as JwsAlgorithm
from jwt.algorithms import get_default_algorithms

from chit.core.claims import AccessTokenClaims
from chit.core.keys import ALGORITHMS, PublicKey, SigningKey
from chit.errors import InvalidTokenError, JwksError

TOKEN_TYPE = "at+jwt"
MAX_TOKEN_SIZE = 16 * 1024
DEFAULT_LEEWAY = 60
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})


_SIGNERS: dict[str, JwsAlgorithm] = get_default_algorithms()


@functools.lru_cache(maxsize=64)
def _encoded_header(alg: str, kid: str) -> bytes:
    """The JOSE header's segment, as PyJWT writes it (keys sorted, no spaces); one per signing key."""
    header = json.dumps({"alg": alg, "kid": kid, "typ": TOKEN_TYPE}, separators=(",", ":"), sort_keys=True)
    return _b64(header.encode())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def encode_access_token(claims: AccessTokenClaims, key: SigningKey) -> str:
    """The signed JWT, byte for byte what ``jwt.encode`` writes, without its per-call option handling:
    the header segment is made once per key and PyJWT's algorithm signs (DER to raw for ES256)."""
    payload = json.dumps(claims.to_dict(), separators=(",", ":")).encode()
    signing_input = _encoded_header(key.alg, key.kid) + b"." + _b64(payload)
    signature = _SIGNERS[key.alg].sign(signing_input, key.private_key)
    return (signing_input + b"." + _b64(signature)).decode("ascii")


def decode_access_token(
    token: str,
    keys: Callable[[str], tuple[PublicKey, str] | None],
    *,
    issuer: str,
    audience: str | None = None,
    leeway: float = DEFAULT_LEEWAY,
    algorithms: Collection[str] = ALGORITHMS,
    max_size: int = MAX_TOKEN_SIZE,
    now: float | None = None,
) -> AccessTokenClaims:
    """One-off verification with ``keys`` mapping a kid to (public key, algorithm); a verifier that
    checks many tokens builds one ``AccessTokenDecoder`` and keeps its ``VerificationKey``s."""

    def find(kid: str) -> VerificationKey | None:
        found = keys(kid)
        return None if found is None else verification_key(kid, found[1], found[0])

    decoder = AccessTokenDecoder(
        issuer=issuer, audience=audience, leeway=leeway, algorithms=algorithms, max_size=max_size
    )
    return decoder.decode(token, find, time.time() if now is None else now)


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims without any check: for ``chit token inspect`` only."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("token is not a JWT") from exc
    return header, claims


# --- Verification for resource servers: keys from a JWKS, one precomputed decoder ---------------------

_KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}  # the JWK kty each allowed algorithm needs
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
# unused low bits of the last character must be zero (RFC 4648 §3.5): one token, one spelling
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
MAX_HEADER_SIZE = 1024


class UnknownKeyError(InvalidTokenError):
    """The token names a ``kid`` the verifier does not hold (yet): worth one JWKS refresh."""

    def __init__(self, kid: str) -> None:
        super().__init__("token is signed by an unknown key")
        self.kid = kid


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key from a JWKS, with the one algorithm it verifies."""

    kid: str
    alg: str
    key: PublicKey
    _algorithm: JwsAlgorithm = field(repr=False, compare=False)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(self._algorithm.verify(signing_input, self.key, signature))
        except (ValueError, TypeError):
            return False


def verification_key(kid: str, alg: str, key: PublicKey) -> VerificationKey:
    """A verification key for a public key already in hand (tests, pinned keys)."""
    algorithm = get_default_algorithms().get(alg)
    if algorithm is None or alg not in _KEY_TYPES:
        raise JwksError(f"unsupported algorithm {alg!r}")
    _check_key_type(alg, key)
    return VerificationKey(kid, alg, key, algorithm)


def _check_key_type(alg: str, key: object) -> None:
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            raise JwksError("RS256 needs an RSA public key of at least 2048 bits")
    elif alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise JwksError("ES256 needs a P-256 public key")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise JwksError("EdDSA needs an Ed25519 public key")


def parse_jwk(jwk: Mapping[str, Any], *, algorithms: Collection[str] = ALGORITHMS) -> VerificationKey:
    """One public signing key of a JWKS (RFC 7517); anything else raises ``JwksError``."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwksError("key has no kid")
    if _PRIVATE_JWK_MEMBERS.intersection(jwk):
        raise JwksError(f"key {kid} carries private or symmetric key material")
    if jwk.get("use", "sig") != "sig":
        raise JwksError(f"key {kid} is not a signing key")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JwksError(f"key {kid} may not verify")
    kty = jwk.get("kty")
    alg = jwk.get("alg")
    if alg is None:
        alg = {"RSA": "RS256", "EC": "ES256"}.get(str(kty), "EdDSA" if jwk.get("crv") == "Ed25519" else None)
    if not isinstance(alg, str) or alg not in algorithms or _KEY_TYPES.get(alg) != kty:
        raise JwksError(f"key {kid} has an algorithm or key type that is not allowed")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise JwksError(f"key {kid} is malformed") from exc
    return verification_key(kid, alg, key)


def parse_jwks(document: object, *, algorithms: Collection[str] = ALGORITHMS) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document by kid; a document with none is refused whole."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        try:
            key = parse_jwk(entry, algorithms=algorithms)
        except JwksError:
            continue  # a key this verifier cannot use (another algorithm, encryption) is skipped
        keys.setdefault(key.kid, key)
    if not keys:
        raise JwksError("the JWKS holds no usable signing key")
    return keys


KeyFinder = Callable[[str], VerificationKey | None]
"""Maps a ``kid`` to its verification key, or None when the kid is unknown."""


def _b64decode(segment: str, name: str) -> bytes:
    size = len(segment) % 4
    if size == 1 or not _B64URL.match(segment) or (size and segment[-1] not in _CANONICAL_LAST[size]):
        raise InvalidTokenError(f"token {name} is not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-size % 4))


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidTokenError(f"token {name} is not JSON") from exc
    if not isinstance(value, dict):
        raise InvalidTokenError(f"token {name} is not a JSON object")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class AccessTokenDecoder:
    """Verifies access tokens for one issuer and audience, with every option fixed up front.

    The checks are ``decode_access_token``'s, done once each and in the order that refuses cheap
    forgeries before any cryptography: size, structure, header (forbidden members, ``typ``, ``alg``
    from the allow-list, ``kid``), the key the kid names (whose algorithm must be the header's),
    the signature, then the claims (required members and types, exact ``iss``, ``aud`` containing
    the audience, ``exp``/``nbf``/``iat`` with ``leeway``).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        leeway: float = DEFAULT_LEEWAY,
        algorithms: Collection[str] = ALGORITHMS,
        max_size: int = MAX_TOKEN_SIZE,
    ) -> None:
        if audience is not None and (not isinstance(audience, str) or not audience):
            raise TypeError("audience must be a non-empty string (None: any audience, for the issuer itself)")
        unknown = set(algorithms) - set(_KEY_TYPES)
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(_KEY_TYPES)}")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.algorithms = frozenset(algorithms)
        self.max_size = max_size

    def header(self, token: str) -> dict[str, Any]:
        """The JOSE header after every check that needs no key."""
        if not isinstance(token, str) or not token:
            raise InvalidTokenError("token is empty")
        if len(token) > self.max_size:
            raise InvalidTokenError(f"token is larger than {self.max_size} bytes")
        if not token.isascii() or token.count(".") != 2:
            raise InvalidTokenError("token is not a compact JWS")
        segment = token[: token.index(".")]
        if len(segment) > MAX_HEADER_SIZE:
            raise InvalidTokenError("token header is too large")
        header = _json_object(_b64decode(segment, "header"), "header")
        if not _FORBIDDEN_HEADERS.isdisjoint(header) or "b64" in header:
            forbidden = sorted((_FORBIDDEN_HEADERS | {"b64"}).intersection(header))
            raise InvalidTokenError(f"token header carries forbidden parameters: {', '.join(forbidden)}")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
            raise InvalidTokenError("token type is not at+jwt")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidTokenError(f"token algorithm {str(alg)[:20]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("token header has no kid")
        return header

    def decode(self, token: str, keys: KeyFinder, now: float, *, check_times: bool = True) -> AccessTokenClaims:
        header = self.header(token)
        key = keys(header["kid"])
        if key is None:
            raise UnknownKeyError(header["kid"])
        if key.alg != header["alg"]:
            raise InvalidTokenError("token algorithm does not match its key")
        signing_input, _, signature = token.rpartition(".")
        if not key.verify(signing_input.encode("ascii"), _b64decode(signature, "signature")):
            raise InvalidTokenError("token signature is invalid")
        payload = signing_input[signing_input.index(".") + 1 :]
        claims = _json_object(_b64decode(payload, "payload"), "payload")
        return self.check_claims(claims, now, check_times=check_times)

    def check_claims(self, payload: dict[str, Any], now: float, *, check_times: bool = True) -> AccessTokenClaims:
        claims = AccessTokenClaims.from_dict(payload)
        if claims.iss != self.issuer:
            raise InvalidTokenError("token was issued by another issuer")
        if self.audience is not None and self.audience not in claims.aud:
            raise InvalidTokenError("token is not meant for this audience")
        if not check_times:  # ``chit token inspect`` shows expired tokens' signatures too
            return claims
        leeway = self.leeway
        if claims.exp <= now - leeway:
            raise InvalidTokenError("token has expired")
        nbf = payload.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise InvalidTokenError("token claims have the wrong types")
            if nbf > now + leeway:
                raise InvalidTokenError("token is not yet valid")
        if claims.iat > now + leeway:
            raise InvalidTokenError("token was issued in the future")
        return claims


def sign_claims(payload: Mapping[str, Any], key: SigningKey, *, headers: Mapping[str, Any] | None = None) -> str:
    """A JWS over arbitrary claims with the access-token header (``typ``, ``kid``): for test kits."""
    return jwt.encode(
        dict(payload),
        key.private_key,
        algorithm=key.alg,
        headers={"typ": TOKEN_TYPE, "kid": key.kid, **(headers or {})},
    )
