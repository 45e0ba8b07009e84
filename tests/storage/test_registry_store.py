"""chit.storage.sql.store.Store on both backends, a SQLite file and the real PostgreSQL: the service
registry, roles and grants, API keys, sessions and the hash-chained audit log.
"""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from chit.errors import ConflictError, NotFoundError, RefusedError
from chit.policy import administration as rules
from chit.policy.manifest import parse_manifest
from chit.server.audit import AuditEvent, AuditLog, chain_hash, verify_chain
from chit.server.audit import _row as audit_row
from chit.storage import tables as t
from chit.storage.engine import create_database_engine
from chit.storage.records import Registration
from chit.storage.sql.audit import GENESIS_HASH
from chit.storage.sql.store import Store

NOW = 1_700_000_000

PHOTOS = """\
id = "photos"
description = "Pictures"

[permissions]
"images:read" = "Read an image"
"images:write" = "Write an image"

[roles]
viewer = ["images:read"]
editor = ["images:read", "images:write"]

[needs]
permissions = ["tags:labels:read"]

[on_behalf]
permissions = ["tags:labels:write"]
deferred = ["tags:labels:write"]
"""


def count(store: Store, table: t.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def register(store: Store, text: str, now: int = NOW, secret_hash: str = "a" * 64) -> Registration:
    manifest = parse_manifest(text, "test.toml")
    return store.register_service(
        manifest,
        admin_role=(rules.service_admin_role(manifest.id), str(rules.service_admin_permission(manifest.id))),
        secret_hash=secret_hash,
        now=now,
    )


def snapshot(store: Store) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the registry tables, to show that a refused operation wrote nothing."""
    tables = [t.services, t.permissions, t.roles, t.role_permissions, t.grants, t.clients]
    with store.engine.connect() as conn:
        return {table.name: sorted(tuple(r) for r in conn.execute(select(table))) for table in tables}


# services ----------------------------------------------------------------------------------------


def test_register_creates_the_service_its_roles_and_its_client(store: Store) -> None:
    outcome = register(store, PHOTOS, secret_hash="b" * 64)
    assert outcome == Registration(created=True, changed=True, client_created=True)

    service = store.service("photos")
    assert service is not None
    assert service.description == "Pictures"
    assert service.manifest == parse_manifest(PHOTOS).canonical()
    assert service.on_behalf == {"tags:labels:write"}
    assert service.deferred == {"tags:labels:write"}
    assert service.registered_at == service.updated_at == NOW
    assert [s.id for s in store.services()] == ["photos"]
    assert store.defined_permissions() == {
        "photos:images:read": "Read an image",
        "photos:images:write": "Write an image",
    }

    roles = {r["name"]: r for r in store.roles()}
    assert roles["photos:viewer"]["permissions"] == ["photos:images:read"]
    assert roles["photos:editor"]["permissions"] == ["photos:images:read", "photos:images:write"]
    assert roles["chit:service-admin.photos"]["permissions"] == ["chit:service.photos:admin"]
    assert {roles[n]["service"] for n in ("photos:viewer", "photos:editor", "chit:service-admin.photos")} == {"photos"}

    client = store.client_by_client_id("photos")
    assert client is not None
    # [on_behalf] lists permissions: the service may exchange its users' tokens (DESIGN §4)
    assert client.grant_types == {"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"}
    assert client.scope == {"tags:labels:read"}
    assert client.secret_hash == "b" * 64
    assert not client.public


def test_registering_the_same_manifest_again_writes_nothing(store: Store) -> None:
    register(store, PHOTOS)
    before = snapshot(store)
    # the same meaning in another order, a day later, with another would-be secret
    reordered = PHOTOS.replace('editor = ["images:read", "images:write"]', 'editor = ["images:write", "images:read"]')
    assert reordered != PHOTOS
    outcome = register(store, reordered, now=NOW + 86_400, secret_hash="c" * 64)
    assert outcome == Registration(created=False, changed=False, client_created=False)
    assert snapshot(store) == before
    assert store.service("photos").updated_at == NOW  # type: ignore[union-attr]


def test_updating_a_manifest_applies_the_change(store: Store) -> None:
    register(store, PHOTOS, secret_hash="b" * 64)
    updated = PHOTOS.replace(
        '"images:write" = "Write an image"', '"images:write" = "Write an image"\n"images:delete" = "Delete"'
    ).replace(
        'editor = ["images:read", "images:write"]',
        'editor = ["images:read", "images:write"]\nreaper = ["images:delete"]',
    )
    updated = updated.replace('permissions = ["tags:labels:read"]', 'permissions = ["tags:labels:read", "tags:x:read"]')
    outcome = register(store, updated, now=NOW + 10, secret_hash="c" * 64)
    assert outcome == Registration(created=False, changed=True, client_created=False)

    service = store.service("photos")
    assert service is not None
    assert (service.registered_at, service.updated_at) == (NOW, NOW + 10)
    assert service.manifest == parse_manifest(updated).canonical()
    assert "photos:images:delete" in store.defined_permissions()
    assert store.role_permissions("photos:reaper") == {"photos:images:delete"}
    client = store.client_by_client_id("photos")
    assert client is not None
    assert client.scope == {"tags:labels:read", "tags:x:read"}
    assert client.secret_hash == "b" * 64  # the client stays; its secret is not replaced


def test_dropping_a_held_permission_is_refused_with_the_grants_and_changes_nothing(store: Store) -> None:
    register(store, PHOTOS)
    alice = store.create_user("alice", "hash", NOW, roles=["photos:editor"])
    bot = store.create_client("bot", secret_hash="h" * 64, grant_types=["client_credentials"], scope=None, now=NOW)
    store.grant(bot.id, "photos:editor", NOW)
    before = snapshot(store)

    without_write = PHOTOS.replace('"images:write" = "Write an image"\n', "").replace(
        'editor = ["images:read", "images:write"]', 'editor = ["images:read"]'
    )
    with pytest.raises(RefusedError) as caught:
        register(store, without_write, now=NOW + 5)
    message = str(caught.value)
    assert "photos:images:write via role photos:editor granted to user alice" in message
    assert "photos:images:write via role photos:editor granted to client bot" in message
    assert snapshot(store) == before
    assert store.permissions_of(alice.id) == {"photos:images:read", "photos:images:write"}

    without_editor = PHOTOS.replace('editor = ["images:read", "images:write"]\n', "")
    with pytest.raises(RefusedError, match="role photos:editor granted to user alice"):
        register(store, without_editor, now=NOW + 5)
    assert snapshot(store) == before


def test_dropping_a_permission_in_a_clients_scope_is_refused(store: Store) -> None:
    register(store, PHOTOS)
    store.create_client(
        "reader", secret_hash="h" * 64, grant_types=["client_credentials"], scope=["photos:images:write"], now=NOW
    )
    without_write = PHOTOS.replace('"images:write" = "Write an image"\n', "").replace(
        'editor = ["images:read", "images:write"]', 'editor = ["images:read"]'
    )
    with pytest.raises(RefusedError, match="photos:images:write in the scope of client reader"):
        register(store, without_write)


def test_dropping_what_nobody_holds_removes_it(store: Store) -> None:
    register(store, PHOTOS)
    alice = store.create_user("alice", "hash", NOW, roles=["photos:viewer"])
    smaller = PHOTOS.replace('"images:write" = "Write an image"\n', "").replace(
        'editor = ["images:read", "images:write"]\n', ""
    )
    assert register(store, smaller, now=NOW + 1).changed
    assert store.defined_permissions() == {"photos:images:read": "Read an image"}
    assert not store.role_exists("photos:editor")
    assert store.role_exists("chit:service-admin.photos")  # the admin role is never dropped
    assert store.permissions_of(alice.id) == {"photos:images:read"}


def test_a_client_id_taken_by_another_client_refuses_registration(store: Store) -> None:
    store.create_client("photos", secret_hash="h" * 64, grant_types=["client_credentials"], scope=None, now=NOW)
    with pytest.raises(ConflictError, match="taken by a client"):
        register(store, PHOTOS)
    assert store.service("photos") is None
    assert store.defined_permissions() == {}
    assert store.client_by_client_id("photos").secret_hash == "h" * 64  # type: ignore[union-attr]


def test_a_role_name_owned_elsewhere_refuses_registration_whole(store: Store) -> None:
    store.create_role("photos:viewer", ["other:a:read"], NOW)  # a global role that squats the name
    with pytest.raises(ConflictError, match="photos:viewer"):
        register(store, PHOTOS)
    assert store.service("photos") is None
    assert store.client_by_client_id("photos") is None
    assert store.role_permissions("photos:viewer") == {"other:a:read"}


# roles and grants --------------------------------------------------------------------------------


def test_role_permissions(store: Store) -> None:
    register(store, PHOTOS)
    store.create_role("global-reader", ["photos:images:read", "tags:labels:read"], NOW)
    assert store.role_permissions("global-reader") == {"photos:images:read", "tags:labels:read"}
    assert store.role_permissions("photos:editor") == {"photos:images:read", "photos:images:write"}
    with pytest.raises(NotFoundError, match="no role 'nope'"):
        store.role_permissions("nope")


def test_revoke_grant(store: Store) -> None:
    register(store, PHOTOS)
    alice = store.create_user("alice", "hash", NOW, roles=["photos:viewer", "photos:editor"])
    assert store.roles_of(alice.id) == ["photos:editor", "photos:viewer"]
    assert store.revoke_grant(alice.id, "photos:editor") is True
    assert store.revoke_grant(alice.id, "photos:editor") is False
    assert store.revoke_grant(alice.id, "no-such-role") is False
    assert store.roles_of(alice.id) == ["photos:viewer"]
    assert store.permissions_of(alice.id) == {"photos:images:read"}
    assert ("user alice", "photos:viewer") in store.grants()
    assert ("user alice", "photos:editor") not in store.grants()


# API keys ----------------------------------------------------------------------------------------


def test_api_key_lifecycle(store: Store) -> None:
    alice = store.create_user("alice", "hash", NOW)
    bob = store.create_user("bob", "hash", NOW)
    first = store.create_api_key(
        key_id="key_1", owner_id=alice.id, secret_hash="1" * 64, scope=["a:b:c", "a:b:d"], now=NOW, expires_at=None
    )
    store.create_api_key(
        key_id="key_2", owner_id=bob.id, secret_hash="2" * 64, scope=["a:b:c"], now=NOW + 1, expires_at=NOW + 100
    )
    assert store.api_key("key_1") == first
    assert first.scope == {"a:b:c", "a:b:d"}
    assert (first.last_used_at, first.revoked_at, first.expires_at) == (None, None, None)
    assert store.api_key("key_none") is None
    assert [k.id for k in store.api_keys()] == ["key_1", "key_2"]
    assert [k.id for k in store.api_keys(bob.id)] == ["key_2"]
    assert store.api_keys("usr_nobody") == []
    assert store.api_key("key_2").expires_at == NOW + 100  # type: ignore[union-attr]

    store.touch_api_key("key_1", NOW + 50)
    assert store.api_key("key_1").last_used_at == NOW + 50  # type: ignore[union-attr]

    store.rotate_api_key("key_1", "9" * 64)
    assert store.api_key("key_1").secret_hash == "9" * 64  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        store.rotate_api_key("key_none", "9" * 64)

    assert store.revoke_api_key("key_1", NOW + 60) is True
    assert store.revoke_api_key("key_1", NOW + 70) is False
    assert store.api_key("key_1").revoked_at == NOW + 60  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        store.revoke_api_key("key_none", NOW)
    with pytest.raises(NotFoundError, match="no active API key"):
        store.rotate_api_key("key_1", "8" * 64)  # a revoked key cannot come back
    assert store.api_key("key_1").secret_hash == "9" * 64  # type: ignore[union-attr]


def test_duplicate_api_key_id_is_refused(store: Store) -> None:
    store.create_api_key(
        key_id="key_x", owner_id="usr_a", secret_hash="1" * 64, scope=["a:b:c"], now=NOW, expires_at=None
    )
    with pytest.raises((ConflictError, IntegrityError)):  # refused, whichever way the driver words it
        store.create_api_key(
            key_id="key_x", owner_id="usr_b", secret_hash="2" * 64, scope=["a:b:c"], now=NOW, expires_at=None
        )
    assert store.api_key("key_x").owner_id == "usr_a"  # type: ignore[union-attr]


# sessions ----------------------------------------------------------------------------------------


def test_sessions_list_and_revoke(store: Store) -> None:
    app = store.create_client("web", secret_hash=None, grant_types=["password", "refresh_token"], scope=None, now=NOW)
    alice = store.create_user("alice", "hash", NOW)
    bob = store.create_user("bob", "hash", NOW)
    args = {"client_pk": app.id, "idle_expires_at": NOW + 100, "absolute_expires_at": NOW + 1000}
    first = store.start_family(user_id=alice.id, scope=["a:b:c"], token_hash="1" * 64, now=NOW, **args)  # type: ignore[arg-type]
    second = store.start_family(user_id=bob.id, scope=[], token_hash="2" * 64, now=NOW + 1, **args)  # type: ignore[arg-type]

    sessions = store.sessions()
    assert [s.id for s in sessions] == [first, second]
    mine = store.sessions(alice.id)
    assert len(mine) == 1
    session = mine[0]
    assert (session.id, session.client_id, session.user_id) == (first, "web", alice.id)
    assert session.scope == {"a:b:c"}
    assert (session.created_at, session.expires_at, session.revoked_at) == (NOW, NOW + 1000, None)

    assert store.revoke_family(first, now=NOW + 5, reason="revoked")
    revoked = store.sessions(alice.id)[0]
    assert (revoked.revoked_at, revoked.revoked_reason) == (NOW + 5, "revoked")
    assert store.sessions(bob.id)[0].revoked_at is None


# audit log ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_append_audit_chains_each_event_to_the_one_before(store: Store) -> None:
    log = AuditLog(store, Clock(NOW))
    log.record(AuditEvent("one"), AuditEvent("two"))
    log.record(AuditEvent("three"))
    events = store.audit_events()
    assert [e.type for e in events] == ["one", "two", "three"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for event in events:
        row = {name: getattr(event, name) for name in ("id", "time", "type", "outcome", "request_id", "client_id")}
        row |= {name: getattr(event, name) for name in ("subject", "actors", "token_id", "source", "detail")}
        assert chain_hash(event.prev_hash, row) == event.hash
    assert verify_chain(store.iter_audit()).intact


def test_append_audit_of_nothing_writes_nothing(store: Store) -> None:
    store.append_audit([], chain_hash)
    assert count(store, t.audit_events) == 0


def test_audit_event_fields_are_stored_as_given(store: Store) -> None:
    log = AuditLog(store, lambda: NOW + 0.25)
    log.record(
        AuditEvent(
            "token.issued",
            "success",
            client_id="web",
            subject="usr_1",
            actors=("cli_2", "cli_3"),
            token_id="jti-1",
            source="10.0.0.1",
            request_id="req-1",
            detail={"grant_type": "password", "scope": "a:b:c"},
        )
    )
    (event,) = store.audit_events()
    assert event.time == (NOW * 1_000_000) + 250_000  # microseconds, UTC epoch
    assert (event.type, event.outcome, event.client_id, event.subject) == ("token.issued", "success", "web", "usr_1")
    assert (event.token_id, event.source, event.request_id) == ("jti-1", "10.0.0.1", "req-1")
    assert json.loads(event.actors) == ["cli_2", "cli_3"]
    assert json.loads(event.detail) == {"grant_type": "password", "scope": "a:b:c"}


def test_audit_events_filters_and_paging(store: Store) -> None:
    clock = Clock(NOW)
    log = AuditLog(store, clock)
    for i in range(10):
        log.record(
            AuditEvent(
                "token.issued" if i % 2 else "token.refused",
                "success" if i % 2 else "failure",
                client_id=f"client-{i % 3}",
                subject=f"usr_{i % 4}",
                request_id=f"req-{i}",
            )
        )
    events = store.audit_events()
    assert len(events) == 10
    times = [e.time for e in events]

    assert [e.request_id for e in store.audit_events(filters={"type": "token.refused"})] == [
        "req-0",
        "req-2",
        "req-4",
        "req-6",
        "req-8",
    ]
    assert {e.outcome for e in store.audit_events(filters={"outcome": "success"})} == {"success"}
    assert [e.request_id for e in store.audit_events(filters={"subject": "usr_1"})] == ["req-1", "req-5", "req-9"]
    assert [e.request_id for e in store.audit_events(filters={"client_id": "client-2"})] == ["req-2", "req-5", "req-8"]
    assert [e.request_id for e in store.audit_events(filters={"request_id": "req-7"})] == ["req-7"]
    both = store.audit_events(filters={"type": "token.issued", "subject": "usr_1"})
    assert [e.request_id for e in both] == ["req-1", "req-5", "req-9"]
    assert store.audit_events(filters={"subject": "usr_nobody"}) == []

    window = store.audit_events(since=times[3], until=times[6])
    assert [e.request_id for e in window] == ["req-3", "req-4", "req-5"]  # since inclusive, until exclusive

    page1 = store.audit_events(limit=4)
    page2 = store.audit_events(after_seq=page1[-1].seq, limit=4)
    page3 = store.audit_events(after_seq=page2[-1].seq, limit=4)
    assert [e.request_id for e in page1 + page2 + page3] == [f"req-{i}" for i in range(10)]
    assert len(page3) == 2
    newest = store.audit_events(limit=3, newest_first=True)
    assert [e.request_id for e in newest] == ["req-9", "req-8", "req-7"]

    assert [e.request_id for e in store.iter_audit(batch=3)] == [f"req-{i}" for i in range(10)]


def test_verify_chain_finds_an_edited_and_a_deleted_event(store: Store) -> None:
    log = AuditLog(store, Clock(NOW))
    for i in range(5):
        log.record(AuditEvent("event", subject=f"usr_{i}"))
    seqs = [e.seq for e in store.audit_events()]
    assert verify_chain(store.iter_audit()).intact

    with store.engine.begin() as conn:
        conn.execute(update(t.audit_events).where(t.audit_events.c.seq == seqs[1]).values(subject="usr_x"))
    report = verify_chain(store.iter_audit())
    assert not report.intact
    assert report.problems == [f"event {seqs[1]} ({store.audit_events()[1].id}): its content was altered"]

    with store.engine.begin() as conn:
        conn.execute(update(t.audit_events).where(t.audit_events.c.seq == seqs[1]).values(subject="usr_1"))
        conn.execute(t.audit_events.delete().where(t.audit_events.c.seq == seqs[3]))
    report = verify_chain(store.iter_audit())
    assert report.events == 4
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"event {seqs[4]} ")
    assert "deleted or altered" in report.problems[0]


@pytest.mark.parametrize("writer", ["one_transaction_per_event", "group_commit"])
def test_concurrent_appends_keep_one_unbroken_chain(database_url: str, store: Store, writer: str) -> None:
    """Threads on two engines (two replicas of the server) append at once: one chain, nothing lost."""
    threads_per_engine, events_per_thread = 4, 15
    engines = [create_database_engine(database_url) for _ in range(2)]
    stores = [Store(e) for e in engines]
    logs = [AuditLog(s) for s in stores]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_per_engine * len(logs))

    def work(log: AuditLog, name: str) -> None:
        try:
            barrier.wait()
            for i in range(events_per_thread):
                event = AuditEvent("concurrent", subject=name, request_id=f"{name}-{i}")
                if writer == "one_transaction_per_event":
                    log.store.append_audit([audit_row(event, i)], chain_hash)
                else:
                    log.record(event)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(log, f"e{n}-t{i}"))
        for n, log in enumerate(logs)
        for i in range(threads_per_engine)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
    finally:
        for engine in engines:
            engine.dispose()

    events = list(store.iter_audit())
    assert len(events) == threads_per_engine * len(logs) * events_per_thread
    assert len({e.request_id for e in events}) == len(events)
    report = verify_chain(events)
    assert report.intact, report.problems[:5]


def test_removing_a_service_takes_its_permissions_roles_client_and_nothing_else(store: Store) -> None:
    register(store, PHOTOS)
    user = store.create_user("viewer", "h", NOW).id
    store.grant(user, "photos:viewer", NOW)
    client = store.client_by_client_id("photos")
    assert client is not None
    store.grant(client.id, "photos:editor", NOW)  # what its own client holds goes with it
    before = snapshot(store)
    with pytest.raises(RefusedError, match="role photos:viewer granted to user viewer"):
        store.remove_service("photos")
    assert snapshot(store) == before  # a refused removal wrote nothing

    store.revoke_grant(user, "photos:viewer")
    assert store.remove_service("photos") == client.id
    assert store.service("photos") is None
    assert store.client_by_client_id("photos") is None
    assert store.defined_permissions() == {}
    assert not [r for r in store.roles() if r["service"] == "photos" or r["name"].startswith("photos:")]
    assert store.roles_of(client.id) == []
    assert store.user_by_id(user) is not None
    with pytest.raises(NotFoundError, match="no registered service 'photos'"):
        store.remove_service("photos")
