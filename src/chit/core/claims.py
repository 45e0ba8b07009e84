"""The claims of a chit access token (RFC 9068 profile, RFC 8693 ``act`` for delegation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chit.errors import InvalidTokenError

REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope")


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    client_id: str
    scope: tuple[str, ...]
    act: Mapping[str, Any] | None = None
    sid: str | None = None  # the refresh-token family the token came from; revoking it revokes this token

    def to_dict(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.iss,
            "sub": self.sub,
            "aud": list(self.aud),
            "exp": self.exp,
            "iat": self.iat,
            "jti": self.jti,
            "client_id": self.client_id,
            "scope": " ".join(self.scope),
        }
        if self.act is not None:
            claims["act"] = dict(self.act)
        if self.sid is not None:
            claims["sid"] = self.sid
        return claims

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> AccessTokenClaims:
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise InvalidTokenError(f"token lacks required claims: {', '.join(missing)}")
        aud = claims["aud"]
        if isinstance(aud, str):
            aud = [aud]
        checks = [
            isinstance(claims["iss"], str),
            isinstance(claims["sub"], str) and claims["sub"] != "",
            isinstance(aud, list) and all(isinstance(a, str) for a in aud),
            _is_int(claims["exp"]) and _is_int(claims["iat"]),
            isinstance(claims["jti"], str) and claims["jti"] != "",
            isinstance(claims["client_id"], str),
            isinstance(claims["scope"], str),
            claims.get("act") is None or isinstance(claims.get("act"), dict),
            claims.get("sid") is None or isinstance(claims.get("sid"), str),
        ]
        if not all(checks):
            raise InvalidTokenError("token claims have the wrong types")
        return cls(
            iss=claims["iss"],
            sub=claims["sub"],
            aud=tuple(aud),
            exp=int(claims["exp"]),
            iat=int(claims["iat"]),
            jti=claims["jti"],
            client_id=claims["client_id"],
            scope=tuple(claims["scope"].split()),
            act=claims.get("act"),
            sid=claims.get("sid"),
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
