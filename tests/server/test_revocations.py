"""chit.server.revocations: the one code on the server that revokes, on SQLite and on PostgreSQL.

Each kind of revocation writes through the store, is audited once, and reaches the publishing hook
(``Revocations._published``, where the revocation feed hooks in) once; revoking it again says it was
revoked already and publishes nothing. The endpoint, the refresh grant and the administration reach
the store only through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest

from chit.errors import InvalidGrantError, NotFoundError
from chit.revocation import RevocationKind
from chit.server.administration import Administration, Caller
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.server.credentials import hash_secret
from chit.server.endpoints.revocation import RevocationEndpoint
from chit.server.endpoints.token import TokenEndpoint
from chit.server.revocations import REUSE, REVOCATION_ENDPOINT, ClientRequest, Revocations
from chit.storage.engine import migrate
from chit.storage.records import Client, RevocationEvent
from chit.testing import Clock

NOW = 1_750_000_000
TTL = 600
FORM = "application/x-www-form-urlencoded"
BY_CLIENT = ClientRequest("app", "10.0.0.1", "req-1", via=REVOCATION_ENDPOINT)
BY_ADMIN = Caller.operator()


class Published(NamedTuple):
    kind: RevocationKind
    value: str
    expires: int
    not_before: int | None


class RecordingRevocations(Revocations):
    """The real module, with its publishing hook recording what it would publish."""

    def __init__(self, server: AuthServer) -> None:
        super().__init__(server)
        self.published: list[Published] = []

    def _published(self, event: RevocationEvent) -> None:
        # what leaves for the services is what the feed holds: the event committed with the revocation
        assert event in self.server.store.revocation_events(event.id - 1, limit=1, now=0)
        self.published.append(Published(event.kind, event.value, event.expires, event.not_before))
        super()._published(event)


class World(NamedTuple):
    server: AuthServer
    revocations: RecordingRevocations
    clock: Clock
    client: Client
    user_id: str

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        records = self.server.store.audit_events(limit=1000)
        return [
            {
                "type": r.type,
                "outcome": r.outcome,
                "client_id": r.client_id,
                "subject": r.subject,
                "actors": json.loads(r.actors),
                "token_id": r.token_id,
                "source": r.source,
                "request_id": r.request_id,
                "detail": json.loads(r.detail),
            }
            for r in records
            if type is None or r.type == type
        ]

    def start_session(self, refresh_token: str) -> str:
        return self.server.store.start_family(
            client_pk=self.client.id,
            user_id=self.user_id,
            scope=["ledger:entries:read"],
            token_hash=hash_secret(refresh_token),
            now=NOW,
            idle_expires_at=NOW + 3600,
            absolute_expires_at=NOW + 7200,
        )


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    clock = Clock(NOW)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, issuer="https://chit.test", access_token_ttl=TTL
    )
    server = AuthServer(settings, clock=clock)
    try:
        migrate(server.store.engine)
        server.keystore.initialize("EdDSA", clock.datetime())
        revocations = server.revocations = RecordingRevocations(server)
        store = server.store
        client = store.create_client(
            "app", secret_hash=None, grant_types=["password", "refresh_token"], scope=None, now=NOW
        )
        user = store.create_user("alice", "not-a-real-hash", NOW)
        yield World(server, revocations, clock, client, user.id)
    finally:
        server.store.engine.dispose()


# the module, one kind at a time ---------------------------------------------------------------------


def test_an_access_token_is_revoked_audited_and_published_once(world: World) -> None:
    revocations, store = world.revocations, world.server.store
    assert revocations.revoke_access_token("jti-1", expires_at=NOW + 300, subject=world.user_id, by=BY_CLIENT)
    assert store.is_access_token_revoked("jti-1")
    assert revocations.published == [Published("token", "jti-1", NOW + 300, None)]
    [event] = world.events("token.revoked")
    assert event == {
        "type": "token.revoked",
        "outcome": "success",
        "client_id": "app",
        "subject": world.user_id,
        "actors": [],
        "token_id": "jti-1",
        "source": "10.0.0.1",
        "request_id": "req-1",
        "detail": {"via": "revocation endpoint"},
    }

    world.clock.advance(5)
    assert not revocations.revoke_access_token("jti-1", expires_at=NOW + 300, subject=world.user_id, by=BY_CLIENT)
    assert len(revocations.published) == 1
    assert len(world.events("token.revoked")) == 1


def test_a_session_is_revoked_audited_and_published_once(world: World) -> None:
    revocations, store = world.revocations, world.server.store
    session = world.start_session("refresh-secret")
    assert revocations.revoke_session(session, subject=world.user_id, by=BY_CLIENT)
    assert store.revoked_families([session]) == {session}
    record = store.session(session)
    assert record is not None
    assert (record.revoked_at, record.revoked_reason) == (NOW, "revoked")
    assert revocations.published == [Published("session", session, NOW + TTL, None)]
    [event] = world.events("session.revoked")
    assert event["token_id"] == session
    assert event["subject"] == world.user_id
    assert event["detail"] == {"via": "revocation endpoint"}

    assert not revocations.revoke_session(session, subject=world.user_id, by=BY_ADMIN)
    assert len(revocations.published) == 1
    assert len(world.events("session.revoked")) == 1


def test_an_administrator_s_session_revocation_names_the_administrator(world: World) -> None:
    session = world.start_session("refresh-secret")
    assert world.revocations.revoke_session(session, subject=world.user_id, by=BY_ADMIN)
    [event] = world.events("session.revoked")
    assert event["actors"] == ["operator"]
    assert event["source"] == "cli"
    assert event["token_id"] is None
    assert event["detail"] == {"session": session}


def test_a_reused_refresh_token_revokes_its_session_and_every_detection_is_recorded(world: World) -> None:
    revocations, store = world.revocations, world.server.store
    session = world.start_session("refresh-secret")
    by = ClientRequest("app", "10.0.0.2", "req-2")
    assert revocations.revoke_session(session, subject=world.user_id, by=by, reason=REUSE)
    record = store.session(session)
    assert record is not None
    assert record.revoked_reason == "reuse"
    assert revocations.published == [Published("session", session, NOW + TTL, None)]
    [event] = world.events("refresh.reuse_detected")
    assert event == {
        "type": "refresh.reuse_detected",
        "outcome": "failure",
        "client_id": "app",
        "subject": world.user_id,
        "actors": [],
        "token_id": session,
        "source": "10.0.0.2",
        "request_id": "req-2",
        "detail": {},
    }

    # a second presentation (a concurrent one that lost the race) is a detection too, not a revocation
    assert not revocations.revoke_session(session, subject=world.user_id, by=by, reason=REUSE)
    assert len(revocations.published) == 1
    assert len(world.events("refresh.reuse_detected")) == 2
    assert world.events("session.revoked") == []


def test_an_api_key_is_revoked_audited_and_published_once(world: World) -> None:
    revocations, store = world.revocations, world.server.store
    store.create_api_key(
        key_id="key_abc",
        owner_id=world.user_id,
        secret_hash="h",
        scope=["ledger:entries:read"],
        now=NOW,
        expires_at=None,
    )
    world.clock.advance(10)
    assert revocations.revoke_api_key("key_abc", subject=world.user_id, by=BY_ADMIN)
    key = store.api_key("key_abc")
    assert key is not None
    assert key.revoked_at == NOW + 10
    assert revocations.published == [Published("session", "key_abc", NOW + 10 + TTL, None)]
    [event] = world.events("api_key.revoked")
    assert (event["subject"], event["actors"], event["detail"]) == (world.user_id, ["operator"], {"key_id": "key_abc"})

    assert not revocations.revoke_api_key("key_abc", subject=world.user_id, by=BY_ADMIN)
    assert len(revocations.published) == 1
    assert len(world.events("api_key.revoked")) == 1
    with pytest.raises(NotFoundError):
        revocations.revoke_api_key("key_none", subject=world.user_id, by=BY_ADMIN)
    assert len(revocations.published) == 1


def test_disabling_a_user_revokes_what_was_issued_before_and_is_published_once(world: World) -> None:
    revocations = world.revocations
    world.clock.advance(20)
    user, changed = revocations.set_user_disabled("alice", True, by=BY_ADMIN)
    assert changed
    assert user.disabled
    assert user.revoked_before == NOW + 21  # whole seconds: what was issued in this second goes too
    assert revocations.published == [Published("subject", world.user_id, NOW + 21 + TTL, NOW + 21)]
    [event] = world.events("user.disabled")
    assert (event["subject"], event["actors"], event["detail"]) == (world.user_id, ["operator"], {"username": "alice"})

    world.clock.advance(20)
    user, changed = revocations.set_user_disabled("alice", True, by=BY_ADMIN)
    assert not changed
    assert user.revoked_before == NOW + 21  # nothing new was revoked: nothing moved
    assert len(revocations.published) == 1
    assert len(world.events("user.disabled")) == 1


def test_enabling_a_user_is_recorded_and_publishes_nothing(world: World) -> None:
    revocations = world.revocations
    revocations.set_user_disabled("alice", True, by=BY_ADMIN)
    user, changed = revocations.set_user_disabled("alice", False, by=BY_ADMIN)
    assert changed
    assert not user.disabled
    assert user.revoked_before == NOW + 1  # enabling revives nothing
    assert [p.kind for p in revocations.published] == ["subject"]
    assert [e["type"] for e in world.events() if e["type"].startswith("user.")] == ["user.disabled", "user.enabled"]

    assert revocations.set_user_disabled("alice", False, by=BY_ADMIN)[1] is False
    assert len(world.events("user.enabled")) == 1
    with pytest.raises(NotFoundError):
        revocations.set_user_disabled("nobody", True, by=BY_ADMIN)


# the callers go through it --------------------------------------------------------------------------


def test_the_revocation_endpoint_revokes_through_the_module(world: World) -> None:
    server = world.server
    issued = server.issue_access_token(subject=world.user_id, client=world.client, permissions=())
    endpoint = RevocationEndpoint(server)
    body = urlencode({"token": issued.token, "client_id": "app"}).encode()
    endpoint.handle(body, content_type=FORM, authorization=None, source="10.0.0.3", request_id="req-3")
    endpoint.handle(body, content_type=FORM, authorization=None, source="10.0.0.3", request_id="req-4")
    assert world.revocations.published == [Published("token", issued.claims.jti, issued.claims.exp, None)]
    assert [e["request_id"] for e in world.events("token.revoked")] == ["req-3"]

    session = world.start_session("endpoint-refresh")
    body = urlencode({"token": "endpoint-refresh", "client_id": "app"}).encode()
    endpoint.handle(body, content_type=FORM, authorization=None, source="10.0.0.3", request_id="req-5")
    assert world.revocations.published[1:] == [Published("session", session, NOW + TTL, None)]
    [event] = world.events("session.revoked")
    assert (event["token_id"], event["request_id"]) == (session, "req-5")


def test_refresh_reuse_is_recorded_once_before_the_refusal(world: World) -> None:
    server, store = world.server, world.server.store
    session = world.start_session("first-refresh")
    assert store.rotate_refresh(hash_secret("first-refresh"), hash_secret("second"), now=NOW, idle_expires_at=NOW + 60)
    endpoint = TokenEndpoint(server)
    params = {"grant_type": "refresh_token", "refresh_token": "first-refresh", "client_id": "app"}
    outcome = endpoint.issue(params, "refresh_token", authorization=None, source="10.0.0.4", request_id="req-6")
    assert isinstance(outcome.error, InvalidGrantError)
    # the reuse is recorded by the revocation; the token endpoint's events (recorded by the app before
    # it answers) hold only the refusal
    assert [e.type for e in outcome.events] == ["token.refused"]
    assert [e["type"] for e in world.events()] == ["refresh.reuse_detected"]
    server.audit.record(*outcome.events)
    assert [e["type"] for e in world.events()] == ["refresh.reuse_detected", "token.refused"]
    assert world.revocations.published == [Published("session", session, NOW + TTL, None)]
    assert store.revoked_families([session]) == {session}


def test_administration_revokes_through_the_module(world: World) -> None:
    store = world.server.store
    admin = Administration(world.server, BY_ADMIN)
    session = world.start_session("refresh-secret")
    store.create_api_key(
        key_id="key_adm",
        owner_id=world.user_id,
        secret_hash="h",
        scope=["ledger:entries:read"],
        now=NOW,
        expires_at=None,
    )
    assert admin.revoke_session(session) is True
    assert admin.revoke_session(session) is False
    assert admin.revoke_api_key("key_adm") is True
    assert admin.revoke_api_key("key_adm") is False
    assert admin.set_user_disabled("alice", True).disabled
    assert admin.set_user_disabled("alice", True).disabled
    assert [(p.kind, p.value) for p in world.revocations.published] == [
        ("session", session),
        ("session", "key_adm"),
        ("subject", world.user_id),
    ]
    assert [e["type"] for e in world.events()] == ["session.revoked", "api_key.revoked", "user.disabled"]
