"""JWT access tokens, RFC 9068 profile. The only module that imports PyJWT.

Secure defaults live in the signatures: the algorithm comes from the key the ``kid`` names, never
from the token; ``typ`` must be ``at+jwt``; header parameters that point elsewhere for keys
(``jku``, ``x5u``, ``jwk``, ``x5c``) or demand extensions (``crit``) are refused; tokens above
``max_size`` bytes are refused before any decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import jwt

from chit.core.claims import AccessTokenClaims
from chit.core.keys import ALGORITHMS, PublicKey, SigningKey
from chit.errors import InvalidTokenError

TOKEN_TYPE = "at+jwt"
MAX_TOKEN_SIZE = 16 * 1024
DEFAULT_LEEWAY = 60
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})


def encode_access_token(claims: AccessTokenClaims, key: SigningKey) -> str:
    return jwt.encode(claims.to_dict(), key.private_key, algorithm=key.alg, headers={"typ": TOKEN_TYPE, "kid": key.kid})


KeyLookup = Callable[[str], tuple[PublicKey, str] | None]
"""Maps a ``kid`` to (public key, its algorithm), or None when the kid is unknown."""


def read_header(token: str, *, max_size: int = MAX_TOKEN_SIZE) -> dict[str, Any]:
    """The JOSE header, after the structural checks that need no key."""
    if not isinstance(token, str) or not token:
        raise InvalidTokenError("token is empty")
    if len(token) > max_size:
        raise InvalidTokenError(f"token is larger than {max_size} bytes")
    if token.count(".") != 2:
        raise InvalidTokenError("token is not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("token header is malformed") from exc
    forbidden = sorted(_FORBIDDEN_HEADERS.intersection(header))
    if forbidden:
        raise InvalidTokenError(f"token header carries forbidden parameters: {', '.join(forbidden)}")
    if str(header.get("typ", "")).lower() not in _ACCEPTED_TYPES:
        raise InvalidTokenError("token type is not at+jwt")
    if not isinstance(header.get("kid"), str):
        raise InvalidTokenError("token header has no kid")
    return header


def decode_access_token(
    token: str,
    keys: KeyLookup,
    *,
    issuer: str,
    audience: str | None = None,
    leeway: int = DEFAULT_LEEWAY,
    algorithms: Collection[str] = ALGORITHMS,
    max_size: int = MAX_TOKEN_SIZE,
    verify_exp: bool = True,
) -> AccessTokenClaims:
    """Verify signature, type, issuer, audience and times; return the claims."""
    header = read_header(token, max_size=max_size)
    found = keys(header["kid"])
    if found is None:
        raise InvalidTokenError("token is signed by an unknown key")
    public_key, key_alg = found
    if header.get("alg") != key_alg or key_alg not in algorithms:
        raise InvalidTokenError("token algorithm does not match its key")
    try:
        payload = jwt.decode(
            token,
            public_key,
            algorithms=[key_alg],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={
                "require": ["exp", "iat", "iss", "sub", "jti"],
                "verify_aud": audience is not None,
                "verify_exp": verify_exp,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidTokenError("token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidTokenError("token is not yet valid") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidTokenError("token was issued by another issuer") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidTokenError("token is not meant for this audience") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidTokenError("token signature is invalid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidTokenError(f"token lacks the {exc.claim} claim") from exc
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("token is malformed") from exc
    return AccessTokenClaims.from_dict(payload)


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims without any check: for ``chit token inspect`` only."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidTokenError("token is not a JWT") from exc
    return header, claims
