"""The one place on the auth server that revokes anything.

An access token or a chit revoked at the revocation endpoint (RFC 7009), a session revoked by its owner or an
administrator, a refresh-token family whose used token came back (RFC 9700 §4.14.2), an API key, a
deferred delegation (by the service it was issued to, or an administrator), a user disabled: each
goes through ``Revocations``, which writes it and its feed event through the store in one transaction
(``Storage.atomically``: committed before anyone is answered, and never one without the other), records
its audit event, and then hands the event to ``FeedHub.published`` (``chit.server.feed``), which wakes
this process's revocation streams and publishes it on Redis. Every service follows the feed (DESIGN §4,
"Revocation feed"). Revoking what was revoked already writes, records and publishes nothing, and says
so (``False``).

Events (``kind``, ``value``): ``token``, a ``jti``; ``chit``, a block's revocation id, revoking every chit
holding that block; ``session``, a refresh-token family ``rtf_…`` or an API key ``key_…``;
``delegation``, a deferred delegation ``dlg_…``; ``subject``, a user id, with ``not_before``; ``client``,
a removed service's client id, with ``not_before``; ``key``, a signing key id or ``root-<n>`` for a chit
root key, with ``not_before``. ``expires`` is when the last token an event concerns expires, after which
services may forget it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chit.errors import NotFoundError
from chit.server.audit import FAILURE, SUCCESS, AuditEvent
from chit.storage.records import RevocationEvent, User

if TYPE_CHECKING:
    from chit.server.authserver import AuthServer

REVOKED = "revoked"  # a session's ``revoked_reason``: its owner, its client or an administrator revoked it
REUSE = "reuse"  # a used refresh token of the session came back
LOGOUT = "logout"  # the user was logged out everywhere
REVOCATION_ENDPOINT = "revocation endpoint"
TOKEN_ID_LENGTH = 64  # the audit log's token_id: a chit's event names the start of its revocation id there


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client at a protocol endpoint: its events name what was revoked in ``token_id``, as every
    OAuth event does, and the endpoint in ``detail.via``."""

    client_id: str
    source: str | None = None
    request_id: str | None = None
    via: str | None = None


class Administrator(Protocol):
    """The caller of an administrative operation (``chit.server.administration``): its events name
    it among the actors, and what was revoked in ``detail``, as every admin event does."""

    @property
    def subject(self) -> str: ...

    @property
    def client_id(self) -> str | None: ...

    @property
    def source(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...


Requester = ClientRequest | Administrator


class Revocations:
    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def revoke_access_token(self, jti: str, *, expires_at: int, subject: str, by: Requester) -> bool:
        """Revoke one access token (``expires_at``: its ``exp``); False if it was revoked already."""
        now = self.server.now()
        event = self._committed(
            lambda: self.server.store.revoke_access_token(jti, expires_at=expires_at, now=now), "token", jti, expires_at
        )
        if event is None:
            return False  # one insert decides: of concurrent revocations, one is recorded and published
        self._record("token.revoked", by, subject=subject, token_id=jti, jti=jti)
        self._published(event)
        return True

    def revoke_chit(self, revocation_id: str, *, expires_at: int, subject: str, by: Requester) -> bool:
        """Revoke every chit holding the block whose revocation id is ``revocation_id`` (128 hex characters;
        ``expires_at``: the chit's expiry, which no chit attenuated from it outlives); False if it was
        revoked already. The event names the whole id in its detail, its start as ``token_id``."""
        now = self.server.now()
        event = self._committed(
            lambda: self.server.store.revoke_chit(revocation_id, expires_at=expires_at, now=now),
            "chit",
            revocation_id,
            expires_at,
        )
        if event is None:
            return False  # one insert decides: of concurrent revocations, one is recorded and published
        token_id = revocation_id[:TOKEN_ID_LENGTH]
        shared = {"revocation_id": revocation_id}
        self._record("chit.revoked", by, subject=subject, token_id=token_id, shared=shared)
        self._published(event)
        return True

    def revoke_session(self, session_id: str, *, subject: str, by: Requester, reason: str = REVOKED) -> bool:
        """Revoke a refresh-token family and every access token issued from it (their ``sid``); False
        if it was revoked already. ``reason`` ``REUSE`` records the reuse detection (a failure), even
        when a concurrent request revoked the family first: each presentation of a used token is one."""
        now = self.server.now()
        event = self._committed(
            lambda: self.server.store.revoke_family(session_id, now=now, reason=reason),
            "session",
            session_id,
            self._last_expiry(now),
        )
        if reason == REUSE:
            self._record("refresh.reuse_detected", by, subject=subject, token_id=session_id, outcome=FAILURE)
        elif event is not None:
            self._record("session.revoked", by, subject=subject, token_id=session_id, session=session_id)
        if event is None:
            return False
        self._published(event)
        return True

    def revoke_api_key(self, key_id: str, *, subject: str, by: Requester) -> bool:
        """Revoke an API key and every access token exchanged from it (their ``sid``); False if it was
        revoked already. ``subject`` is the key's owner; an unknown key is ``NotFoundError``."""
        now = self.server.now()
        event = self._committed(
            lambda: self.server.store.revoke_api_key(key_id, now), "session", key_id, self._last_expiry(now)
        )
        if event is None:
            return False
        self._record("api_key.revoked", by, subject=subject, token_id=key_id, key_id=key_id)
        self._published(event)
        return True

    def revoke_delegation(self, delegation_id: str, *, subject: str, by: Requester) -> bool:
        """Revoke a deferred delegation and every access token redeemed from it (their ``sid``); False
        if it was revoked already. ``subject`` is its user; an unknown delegation is ``NotFoundError``."""
        store = self.server.store
        record = store.delegation(delegation_id)
        if record is None:
            raise NotFoundError(f"no delegation {delegation_id!r}")
        now = self.server.now()
        # what was redeemed from it outlives neither the delegation nor one access token's lifetime
        expires = min(record.expires_at, self._last_expiry(now))
        revoke = lambda: store.revoke_delegation(delegation_id, now)  # noqa: E731
        event = self._committed(revoke, "delegation", delegation_id, expires)
        if event is None:
            return False  # one conditional update decides: of concurrent revocations, one is recorded
        self._record(
            "delegation.revoked",
            by,
            subject=subject,
            token_id=delegation_id,
            shared={"job_id": record.job_id},
            delegation=delegation_id,
        )
        self._published(event)
        return True

    def set_user_disabled(self, username: str, disabled: bool, *, by: Requester) -> tuple[User, bool]:
        """Disable a user, revoking everything issued to them until now (``revoked_before``: enabling
        again revives none of it), or enable them. Returns the user and whether this changed them:
        disabling a disabled user (or enabling an enabled one) writes, records and publishes nothing."""
        store = self.server.store
        user = store.user_by_username(username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        if user.disabled == disabled:
            return user, False
        event = None
        with store.atomically():
            user = store.set_user_disabled(username, disabled, self.server.now())
            if disabled:
                event = self._subject_event(user)
        self._record(
            "user.disabled" if disabled else "user.enabled", by, subject=user.id, token_id=None, username=user.username
        )
        if event is not None:
            self._published(event)
        return user, True

    def logout_everywhere(self, username: str, *, by: Requester) -> tuple[User, list[str]]:
        """Revoke everything issued to a user until now, leaving the account enabled: every access token
        and chit (``revoked_before``), every session (their refresh-token families, returned), every API
        key and deferred delegation created before now. One ``subject`` event tells every service."""
        store = self.server.store
        now = self.server.now()
        with store.atomically():
            user = store.revoke_user_tokens(username, now)
            sessions = store.revoke_families_of(user.id, now=now, reason=LOGOUT)
            event = self._subject_event(user)
        self._record(
            "user.logged_out", by, subject=user.id, token_id=None, shared={"sessions": sessions}, username=user.username
        )
        self._published(event)
        return user, sessions

    def remove_service(self, service_id: str) -> str | None:
        """Remove a service (``Storage.remove_service``) and revoke every token issued to its client or
        by it as an actor: one ``client`` event with its client id. The removed client's pk, if any."""
        store = self.server.store
        now = self.server.now()
        with store.atomically():
            client_pk = store.remove_service(service_id)
            event = None
            if client_pk is not None:
                not_before = now + 1  # whole seconds: what was issued in this second goes too
                event = store.append_revocation_event(
                    "client", service_id, expires=self._last_expiry(not_before), not_before=not_before, now=now
                )
        if event is not None:
            self._published(event)
        return client_pk

    def revoke_signing_key(self, key_id: str, *, not_before: int) -> RevocationEvent:
        """Revoke every token a signing key (a JWT ``kid``, or ``root-<n>`` for a chit root key) signed
        before ``not_before``: a key compromise. The caller has stopped the key signing first."""
        now = self.server.now()
        store = self.server.store
        with store.atomically():
            event = store.append_revocation_event(
                "key", key_id, expires=self._last_expiry(not_before), not_before=not_before, now=now
            )
        self._published(event)
        return event

    def _subject_event(self, user: User) -> RevocationEvent:
        not_before = user.revoked_before
        return self.server.store.append_revocation_event(
            "subject", user.id, expires=self._last_expiry(not_before), not_before=not_before, now=self.server.now()
        )

    def _committed(self, revoke: Callable[[], bool], kind: str, value: str, expires: int) -> RevocationEvent | None:
        """Run ``revoke`` and, when it revoked something, append its feed event, in one transaction;
        the event, or None when there was nothing left to revoke."""
        store = self.server.store
        with store.atomically():
            if not revoke():
                return None
            return store.append_revocation_event(kind, value, expires=expires, now=self.server.now())

    def _last_expiry(self, issued_before: int) -> int:
        """When the last access token issued before ``issued_before`` expires."""
        return issued_before + self.server.settings.access_token_ttl

    def _record(
        self,
        type: str,
        by: Requester,
        *,
        subject: str,
        token_id: str | None,
        outcome: str = SUCCESS,
        shared: Mapping[str, Any] | None = None,
        **named: Any,
    ) -> None:
        """Record the revocation's audit event (``shared``: what its detail carries whoever revoked;
        ``named``: what the event names in an admin's detail)."""
        shared = shared or {}
        if isinstance(by, ClientRequest):
            event = AuditEvent(
                type,
                outcome,
                client_id=by.client_id,
                subject=subject,
                token_id=token_id,
                source=by.source,
                request_id=by.request_id,
                detail={**shared} if by.via is None else {**shared, "via": by.via},
            )
        else:
            event = AuditEvent(
                type,
                outcome,
                client_id=by.client_id,
                subject=subject,
                actors=(by.subject,),
                source=by.source,
                request_id=by.request_id,
                detail={**named, **shared},
            )
        self.server.audit.record(event)

    def _published(self, event: RevocationEvent) -> None:
        """The committed ``event`` leaves for the services: this process's streams, and Redis."""
        self.server.feed.published(event)
