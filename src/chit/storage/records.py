"""Value objects the storage layer hands out (frozen; no ORM objects leave the storage layer)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

USER_ID_PREFIX = "usr_"
CLIENT_ID_PREFIX = "cli_"
API_KEY_PREFIX = "key_"
DELEGATION_PREFIX = "dlg_"


def new_id(prefix: str) -> str:
    """A stable opaque id; the prefixes keep user and client subjects from ever colliding."""
    return prefix + base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str
    disabled: bool
    created_at: int
    revoked_before: int = 0  # whatever was issued to the user before this time is revoked

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, disabled={self.disabled})"


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    client_id: str
    secret_hash: str | None
    public: bool
    grant_types: frozenset[str]
    scope: frozenset[str] | None  # None: no cap
    disabled: bool
    created_at: int
    # what its roles grant, when read together with it (the token endpoint's one round trip)
    role_permissions: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"Client(id={self.id!r}, client_id={self.client_id!r}, public={self.public})"


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    token_hash: str
    family_id: str
    client_pk: str
    user_id: str
    family_scope: frozenset[str]
    issued_at: int
    expires_at: int
    family_expires_at: int
    used_at: int | None
    family_revoked_at: int | None


@dataclass(frozen=True, slots=True)
class ThrottleState:
    key: str
    failures: int
    window_started_at: int
    lock_level: int
    locked_until: int


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    id: str
    description: str
    manifest: str
    on_behalf: frozenset[str]
    deferred: frozenset[str]
    registered_at: int
    updated_at: int
    public_key: str | None = None  # its service key, "ed25519/<hex>"; None until it has one


@dataclass(frozen=True, slots=True)
class Registration:
    created: bool  # the service is new
    changed: bool  # the registration was written (its key aside: ``key_set``)
    client_created: bool  # its client was created now (its secret is shown once)
    key_set: bool = False  # the public key given with the registration was stored now
    replaced_key: str | None = None  # the public key that one replaced, if any


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    owner_id: str
    secret_hash: str
    scope: frozenset[str]
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class DelegationRecord:
    """A deferred delegation: ``client_id`` may act for ``subject_id`` later, within ``scope``, until
    ``expires_at``; ``act`` is the chain of the token it was made from (JSON of its ``act`` claim)."""

    id: str
    subject_id: str
    client_id: str
    secret_hash: str
    scope: frozenset[str]
    job_id: str | None
    act: str | None
    created_at: int
    expires_at: int
    revoked_at: int | None = None
    last_used_at: int | None = None
    redemptions: int = 0

    def __repr__(self) -> str:  # the hash stays out of logs
        return f"DelegationRecord(id={self.id!r}, subject_id={self.subject_id!r}, client_id={self.client_id!r})"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    id: str
    time: int  # microseconds since the epoch, UTC
    type: str
    outcome: str
    request_id: str | None
    client_id: str | None
    subject: str | None
    actors: str  # JSON array
    token_id: str | None
    source: str | None
    detail: str  # JSON object
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    client_id: str
    user_id: str
    scope: frozenset[str]
    created_at: int
    expires_at: int
    revoked_at: int | None
    revoked_reason: str | None


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One event of the revocation feed (DESIGN §4): ``id`` orders the feed; ``expires`` is when the last
    token it concerns expires, after which services may forget it; ``not_before`` (subject, client,
    key) revokes what was issued before it. ``created_at`` is in microseconds since the epoch."""

    id: int
    kind: str
    value: str
    expires: int
    not_before: int | None
    created_at: int

    def wire(self) -> dict[str, object]:
        """The event as the feed, the stream and Redis carry it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "not_before": self.not_before,
            "expires": self.expires,
        }
