"""What the verifier asks about revocation, per request, before it accepts a token; and the feed's events.

The revocation lists (``RevocationList``, fed by the auth server's revocation feed; ``RevokedTokens``,
filled by hand) implement ``RevocationCheck``: the verifier hands them the principal of every request,
cached tokens included, so they must answer from memory and never block. A check written against the
earlier form, ``is_revoked(token_id, session_id)``, still works: ``as_revocation_check`` adapts it.

``RevocationEvent`` is one event of the feed as the auth server sends it (DESIGN §4, "Revocation feed").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

if TYPE_CHECKING:
    from chit.policy.principals import Principal

# What a revocation concerns, as the feed names it (DESIGN §4, "Revocation feed"): one access token
# (``jti``); a session (a refresh-token family ``rtf_…`` or an API key ``key_…``) and every token from
# it; everything of a subject or a client before a point in time; a chit and its attenuations; a
# signing key and every token it signed; a deferred delegation.
RevocationKind = Literal["token", "session", "subject", "client", "chit", "key", "delegation"]
REVOCATION_KINDS: frozenset[str] = frozenset(get_args(RevocationKind))
MAX_VALUE_LENGTH = 512  # the longest value is a chit's revocation id (128 hex characters)


@runtime_checkable
class RevocationCheck(Protocol):
    def revokes(self, principal: Principal) -> bool:
        """Whether the token ``principal`` was verified from has been revoked: by its ``jti`` or its
        session, for a chit by any of its blocks' revocation ids, or with everything of its subject or
        client. Called on every request: it answers from memory."""
        ...


@runtime_checkable
class TokenRevocationCheck(Protocol):
    """The earlier form of the check, asked with a token's ``jti`` and ``sid`` (for a chit, with each of
    its revocation ids and no session)."""

    def is_revoked(self, token_id: str, session_id: str | None) -> bool: ...


class _ByTokenAndSession:
    """A ``TokenRevocationCheck`` asked the way it always was."""

    __slots__ = ("check",)

    def __init__(self, check: TokenRevocationCheck) -> None:
        self.check = check

    def revokes(self, principal: Principal) -> bool:
        is_revoked = self.check.is_revoked
        if principal.chit is not None:
            # a chit is revoked with any block: revoking one revokes every chit attenuated from it
            return any(is_revoked(block_id, None) for block_id in principal.chit.revocation_ids)
        return is_revoked(principal.token_id, principal.session_id)


def as_revocation_check(check: RevocationCheck | TokenRevocationCheck) -> RevocationCheck:
    """``check`` as a ``RevocationCheck``: itself, or an adapter for one that only has ``is_revoked``."""
    if isinstance(check, RevocationCheck):
        return check
    if isinstance(check, TokenRevocationCheck):
        return _ByTokenAndSession(check)
    raise TypeError(f"{type(check).__name__} has neither revokes(principal) nor is_revoked(token_id, session_id)")


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One revocation as the feed carries it: ``{"id", "kind", "value", "not_before", "expires"}``.

    ``id`` orders the feed (positive, increasing); ``value`` is what ``kind`` names (a ``jti``, a
    ``sid``, a user id, a client id, a chit block's revocation id, a key id, a delegation id);
    ``not_before`` (epoch seconds, subject and client) revokes what was issued before it; ``expires``
    is when the last token the event concerns expires, after which a service may forget it.
    """

    id: int
    kind: RevocationKind
    value: str
    expires: int
    not_before: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevocationEvent:
        """The event of a decoded JSON object; ``ValueError`` naming what is wrong with anything else."""
        if not isinstance(data, Mapping):
            raise ValueError("a revocation event is a JSON object")
        event_id: Any = data.get("id")
        kind, value = data.get("kind"), data.get("value")
        expires: Any = data.get("expires")
        not_before = data.get("not_before")
        if not _is_int(event_id) or event_id < 1:
            raise ValueError(f"revocation event id {event_id!r} is not a positive integer")
        if kind not in REVOCATION_KINDS:
            raise ValueError(f"revocation event {event_id} has an unknown kind {kind!r}")
        if not isinstance(value, str) or not value or len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"revocation event {event_id} has no usable value")
        if not _is_int(expires):
            raise ValueError(f"revocation event {event_id} has no integer expires")
        if not_before is not None and not _is_int(not_before):
            raise ValueError(f"revocation event {event_id} has a not_before that is not an integer")
        return cls(event_id, kind, value, expires, not_before)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "not_before": self.not_before,
            "expires": self.expires,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
