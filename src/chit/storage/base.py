"""What the server needs from storage: one ``Protocol`` per aggregate, and ``Storage`` for all of them.

``chit.storage.sql.Store`` implements them on SQLAlchemy (SQLite, PostgreSQL); one conformance suite
(tests/test_storage.py, tests/test_registry_storage.py) runs them on both databases. Every method is
one transaction: it either happens whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from chit.policy.manifest import Manifest
from chit.storage.records import (
    ApiKeyRecord,
    AuditRecord,
    Client,
    DelegationRecord,
    RefreshRecord,
    Registration,
    RevocationEvent,
    ServiceRecord,
    SessionRecord,
    ThrottleState,
    User,
)


class UserStore(Protocol):
    """Users: accounts, by id or by username."""

    def create_user(self, username: str, password_hash: str, now: int, roles: Iterable[str] = ()) -> User: ...

    def user_by_username(self, username: str) -> User | None: ...

    def user_by_id(self, user_id: str) -> User | None: ...

    def set_user_disabled(self, username: str, disabled: bool, now: int) -> User:
        """Disabling also revokes everything issued to the user until now: enabling revives none of it."""
        ...

    def revoke_user_tokens(self, username: str, now: int) -> User:
        """Revoke everything issued to the user until now (``revoked_before``), leaving it enabled."""
        ...

    def users(self) -> list[User]: ...


class ClientStore(Protocol):
    """OAuth2 clients and service accounts."""

    def create_client(
        self,
        client_id: str,
        *,
        secret_hash: str | None,
        grant_types: Iterable[str],
        scope: Iterable[str] | None,
        now: int,
        roles: Iterable[str] = (),
    ) -> Client: ...

    def client_by_client_id(self, client_id: str, *, with_permissions: bool = False) -> Client | None: ...

    def client_by_pk(self, pk: str) -> Client | None: ...

    def clients(self) -> list[Client]: ...


class ServiceStore(Protocol):
    """The service registry and its roles."""

    def service(self, service_id: str) -> ServiceRecord | None: ...

    def services(self) -> list[ServiceRecord]: ...

    def remove_service(self, service_id: str) -> str | None:
        """Remove a service with its permissions, roles and own client (and that client's grants and
        API keys); refused while anyone else holds any of them. The removed client's id, if any."""
        ...

    def defined_permissions(self) -> dict[str, str]:
        """Every permission a registered service defines, with its description."""
        ...

    def register_service(
        self,
        manifest: Manifest,
        *,
        admin_role: tuple[str, str],
        secret_hash: str,
        now: int,
        public_key: str | None = None,
        replace_key: bool = False,
        may_change: bool = True,
    ) -> Registration:
        """Create or update a service from its manifest; refuse to drop what is still granted.

        ``admin_role`` is (role name, permission) of the service's admin role, kept across updates.
        ``public_key`` is stored in the same transaction when the service has no key yet, or, with
        ``replace_key``, whatever key it has; a key another service has is a ``ConflictError``.
        Without ``may_change``, a service registered already may only be registered again as it is (its
        manifest, and no key of the caller's in place of its own): anything else is ``ForbiddenError``.
        """
        ...

    def service_public_keys(self) -> list[tuple[str, str]]:
        """(service id, public key) of every service that has a key, by service id."""
        ...

    def set_service_public_key(self, service_id: str, public_key: str, *, replacing: str | None) -> bool:
        """Store a service's public key if its key is still ``replacing`` (None: it has none); False when
        it is not (another writer came first)."""
        ...

    def create_role(self, name: str, permissions: Iterable[str], now: int, description: str = "") -> None: ...

    def role_exists(self, name: str) -> bool: ...

    def role_permissions(self, role: str) -> frozenset[str]: ...

    def roles(self) -> list[dict[str, Any]]: ...


class GrantStore(Protocol):
    """Which principal holds which role."""

    def grant(self, principal_id: str, role: str, now: int) -> bool:
        """Grant ``role``; False when it was already granted."""
        ...

    def permissions_of(self, principal_id: str) -> frozenset[str]:
        """What the roles granted to a user or client add up to."""
        ...

    def roles_of(self, principal_id: str) -> list[str]: ...

    def grants(self) -> list[tuple[str, str]]:
        """(principal description, role) for every grant."""
        ...

    def revoke_grant(self, principal_id: str, role: str) -> bool: ...


class ApiKeyStore(Protocol):
    """API keys of bots."""

    def create_api_key(
        self,
        *,
        key_id: str,
        owner_id: str,
        secret_hash: str,
        scope: Iterable[str],
        now: int,
        expires_at: int | None,
    ) -> ApiKeyRecord: ...

    def api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    def api_keys(self, owner_id: str | None = None) -> list[ApiKeyRecord]: ...

    def revoke_api_key(self, key_id: str, now: int) -> bool: ...

    def rotate_api_key(self, key_id: str, secret_hash: str) -> None: ...

    def touch_api_key(self, key_id: str, now: int) -> None: ...


class DelegationStore(Protocol):
    """Deferred delegations: a service may act for a user later, within a scope, until they expire."""

    def create_delegation(self, record: DelegationRecord, *, max_active: int, now: int) -> None:
        """Store it; ``RefusedError`` when the service already holds ``max_active`` live ones for the user."""
        ...

    def delegation(self, delegation_id: str) -> DelegationRecord | None: ...

    def delegations(
        self, subject_id: str | None = None, *, client_id: str | None = None, ids: Iterable[str] | None = None
    ) -> list[DelegationRecord]: ...

    def revoke_delegation(self, delegation_id: str, now: int) -> bool:
        """False if revoked already; ``NotFoundError`` if unknown."""
        ...


class SessionStore(Protocol):
    """Refresh-token families and their rotating tokens."""

    def start_family(
        self,
        *,
        client_pk: str,
        user_id: str,
        scope: Iterable[str],
        token_hash: str,
        now: int,
        idle_expires_at: int,
        absolute_expires_at: int,
    ) -> str: ...

    def find_refresh(self, token_hash: str) -> RefreshRecord | None: ...

    def rotate_refresh(self, old_hash: str, new_hash: str, *, now: int, idle_expires_at: int) -> bool:
        """Mark ``old_hash`` used and issue ``new_hash`` in its family; False if it was used already."""
        ...

    def revoke_family(self, family_id: str, *, now: int, reason: str) -> bool:
        """Revoke a refresh-token family; False if it was revoked already."""
        ...

    def revoke_families_of(self, user_id: str, *, now: int, reason: str) -> list[str]:
        """Revoke every live refresh-token family of a user; the ids of those this revoked."""
        ...

    def revoked_families(self, family_ids: Iterable[str]) -> frozenset[str]: ...

    def sessions(self, user_id: str | None = None, *, session_id: str | None = None) -> list[SessionRecord]: ...

    def session(self, session_id: str) -> SessionRecord | None: ...


class RevokedTokenStore(Protocol):
    """Revoked access tokens and chits."""

    def revoke_access_token(self, jti: str, *, expires_at: int, now: int) -> bool:
        """Revoke ``jti``; False when it was revoked already."""
        ...

    def is_access_token_revoked(self, jti: str) -> bool: ...

    def revoke_chit(self, revocation_id: str, *, expires_at: int, now: int) -> bool:
        """Revoke the chits holding the block of ``revocation_id``; False when it was revoked already."""
        ...

    def revoked_chit_ids(self, revocation_ids: Iterable[str]) -> frozenset[str]:
        """Which of ``revocation_ids`` (a chit's, one per block) are revoked."""
        ...


class RevocationEventStore(Protocol):
    """The revocation feed's events, in commit order (DESIGN §4)."""

    def atomically(self) -> AbstractContextManager[None]:
        """Every method called in the block joins one transaction: a revocation and its event together."""
        ...

    def append_revocation_event(
        self, kind: str, value: str, *, expires: int, not_before: int | None = None, now: int
    ) -> RevocationEvent: ...

    def revocation_events(self, after: int, *, limit: int, now: int) -> list[RevocationEvent]: ...

    def last_revocation_event_id(self) -> int: ...

    def revoked_values(self, kind: str, *, now: int) -> dict[str, int | None]: ...


class ThrottleStore(Protocol):
    """The brute-force counters."""

    def throttle_states(self, keys: Iterable[str]) -> dict[str, ThrottleState]: ...

    def update_throttle(
        self,
        keys: Iterable[str],
        step: Callable[[dict[str, ThrottleState | None]], dict[str, ThrottleState | None]],
    ) -> dict[str, ThrottleState | None]:
        """Read, decide and write the throttle state of ``keys`` in one write transaction.

        Nothing can change these keys in between, in any process: SQLite's ``BEGIN IMMEDIATE`` holds
        the whole database; PostgreSQL locks the rows (``SELECT ... FOR UPDATE``, in key order so that
        two of these transactions never wait on each other) after an insert-if-missing, so that two
        first attempts at once cannot both see "nothing counted". ``step`` gets every key's state,
        None when nothing is counted, and returns the new states: None clears a key, a key it leaves
        out keeps its state. An exception raised by ``step`` rolls the whole transaction back.
        Returns what ``step`` returned. Few statements: the lock is held by every login at once.
        """
        ...


class AuditStore(Protocol):
    """The hash-chained audit log."""

    def append_audit(self, rows: Sequence[dict[str, Any]], chain: Callable[[str, dict[str, Any]], str]) -> None:
        """Append events in order, each hash-chained to the one before (``chain(prev_hash, row)``)."""
        ...

    def audit_events(
        self,
        *,
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
        filters: dict[str, str] | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[AuditRecord]: ...

    def iter_audit(self, batch: int = 1000) -> Iterator[AuditRecord]: ...


class Storage(
    UserStore,
    ClientStore,
    ServiceStore,
    GrantStore,
    ApiKeyStore,
    DelegationStore,
    SessionStore,
    RevokedTokenStore,
    RevocationEventStore,
    ThrottleStore,
    AuditStore,
    Protocol,
):
    """Every aggregate, as the auth server uses them."""
