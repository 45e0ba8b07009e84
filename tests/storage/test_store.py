"""chit.storage.sql.store.Store (users, clients, sessions, throttle) on SQLite and the real PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from chit.errors import ConflictError, NotFoundError
from chit.storage import tables as t
from chit.storage.records import ThrottleState
from chit.storage.sql.store import Store

NOW = 1_700_000_000


def count(store: Store, table: t.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def make_user(store: Store, name: str = "alice") -> str:
    return store.create_user(name, "hash-" + name, NOW).id


def make_client(store: Store, client_id: str = "app", *, public: bool = False) -> str:
    return store.create_client(
        client_id,
        secret_hash=None if public else "secret-hash",
        grant_types=["password", "refresh_token"],
        scope=None,
        now=NOW,
    ).id


# users -------------------------------------------------------------------------------------------


def test_create_user_and_look_it_up_by_name_and_id(store: Store) -> None:
    user = store.create_user("Alice", "argon2-hash", NOW)
    assert user.id.startswith("usr_")
    assert user.username == "Alice"
    assert not user.disabled
    by_name = store.user_by_username("Alice")
    assert by_name == user
    assert store.user_by_username("alice") == user  # names are looked up case-insensitively
    assert store.user_by_id(user.id) == user
    assert store.user_by_id(user.id).password_hash == "argon2-hash"  # type: ignore[union-attr]
    assert count(store, t.users) == 1


def test_missing_users_are_none(store: Store) -> None:
    assert store.user_by_username("nobody") is None
    assert store.user_by_id("usr_nobody") is None


def test_duplicate_username_conflicts(store: Store) -> None:
    store.create_user("alice", "h1", NOW)
    with pytest.raises(ConflictError, match="'alice' already exists"):
        store.create_user("alice", "h2", NOW)
    assert count(store, t.users) == 1
    assert store.user_by_username("alice").password_hash == "h1"  # type: ignore[union-attr]


def test_usernames_differing_only_in_case_conflict(store: Store) -> None:
    store.create_user("Alice", "h1", NOW)
    with pytest.raises(ConflictError):
        store.create_user("alice", "h2", NOW)
    with pytest.raises(ConflictError):
        store.create_user("ALICE", "h3", NOW)
    assert count(store, t.users) == 1


def test_user_ids_are_distinct(store: Store) -> None:
    assert make_user(store, "a") != make_user(store, "b")


def test_disable_and_enable_a_user(store: Store) -> None:
    user = store.create_user("bob", "h", NOW)
    assert user.revoked_before == 0
    disabled = store.set_user_disabled("BOB", True, NOW + 5)
    assert disabled.id == user.id
    assert disabled.disabled
    assert store.user_by_id(user.id).disabled  # type: ignore[union-attr]
    enabled = store.set_user_disabled("bob", False, NOW + 9)
    assert not enabled.disabled
    assert not store.user_by_username("bob").disabled  # type: ignore[union-attr]
    # everything issued up to the disable's second stays revoked: enabling keeps the mark
    assert enabled.revoked_before == NOW + 6


def test_disable_missing_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no user 'ghost'"):
        store.set_user_disabled("ghost", True, NOW)


# clients -----------------------------------------------------------------------------------------


def test_create_confidential_client_and_look_it_up(store: Store) -> None:
    client = store.create_client(
        "svc",
        secret_hash="abc123",
        grant_types=["client_credentials"],
        scope=["svc:images:read", "svc:tags:*"],
        now=NOW,
    )
    assert client.id.startswith("cli_")
    assert not client.public
    found = store.client_by_client_id("svc")
    assert found == client
    assert found is not None
    assert found.secret_hash == "abc123"
    assert found.grant_types == {"client_credentials"}
    assert found.scope == {"svc:images:read", "svc:tags:*"}
    assert found.created_at == NOW
    assert store.client_by_pk(client.id) == client


def test_public_client_has_no_secret_hash_and_no_cap_when_scope_is_none(store: Store) -> None:
    store.create_client("cli", secret_hash=None, grant_types=["password", "refresh_token"], scope=None, now=NOW)
    found = store.client_by_client_id("cli")
    assert found is not None
    assert found.public
    assert found.secret_hash is None
    assert found.scope is None
    assert found.grant_types == {"password", "refresh_token"}


def test_empty_scope_is_an_empty_cap_not_no_cap(store: Store) -> None:
    store.create_client("capped", secret_hash="h", grant_types=["client_credentials"], scope=[], now=NOW)
    assert store.client_by_client_id("capped").scope == frozenset()  # type: ignore[union-attr]


def test_duplicate_client_conflicts(store: Store) -> None:
    make_client(store, "app")
    with pytest.raises(ConflictError, match="'app' already exists"):
        make_client(store, "app")
    assert count(store, t.clients) == 1


def test_missing_clients_are_none(store: Store) -> None:
    assert store.client_by_client_id("nope") is None
    assert store.client_by_pk("cli_nope") is None


def test_user_and_client_ids_never_collide(store: Store) -> None:
    user_id = make_user(store, "same")
    client_pk = make_client(store, "same")
    assert user_id != client_pk
    assert store.user_by_id(client_pk) is None
    assert store.client_by_pk(user_id) is None


# roles and grants --------------------------------------------------------------------------------


def test_create_role_and_grant_it(store: Store) -> None:
    store.create_role("viewer", ["svc:images:read", "svc:images:read", "svc:tags:read"], NOW, "read things")
    assert store.role_exists("viewer")
    assert not store.role_exists("editor")
    user_id = make_user(store)
    assert store.permissions_of(user_id) == frozenset()
    assert store.grant(user_id, "viewer", NOW) is True
    assert store.grant(user_id, "viewer", NOW) is False  # already granted
    assert store.permissions_of(user_id) == {"svc:images:read", "svc:tags:read"}
    assert count(store, t.grants) == 1


def test_role_with_no_permissions(store: Store) -> None:
    store.create_role("empty", [], NOW)
    user_id = make_user(store)
    assert store.grant(user_id, "empty", NOW)
    assert store.permissions_of(user_id) == frozenset()


def test_duplicate_role_conflicts_and_keeps_the_first(store: Store) -> None:
    store.create_role("viewer", ["svc:images:read"], NOW)
    with pytest.raises(ConflictError, match="role 'viewer' already exists"):
        store.create_role("viewer", ["svc:images:delete"], NOW)
    user_id = make_user(store)
    store.grant(user_id, "viewer", NOW)
    assert store.permissions_of(user_id) == {"svc:images:read"}


def test_granting_an_unknown_role_is_not_found_and_writes_nothing(store: Store) -> None:
    user_id = make_user(store)
    with pytest.raises(NotFoundError, match="no role 'ghost'"):
        store.grant(user_id, "ghost", NOW)
    assert count(store, t.grants) == 0


def test_permissions_of_sums_all_granted_roles(store: Store) -> None:
    store.create_role("reader", ["svc:images:read", "other:a:b"], NOW)
    store.create_role("writer", ["svc:images:write", "other:a:b"], NOW)
    store.create_role("unrelated", ["third:x:y"], NOW)
    user_id = make_user(store)
    store.grant(user_id, "reader", NOW)
    store.grant(user_id, "writer", NOW)
    assert store.permissions_of(user_id) == {"svc:images:read", "svc:images:write", "other:a:b"}
    client_pk = make_client(store)
    store.grant(client_pk, "unrelated", NOW)
    assert store.permissions_of(client_pk) == {"third:x:y"}
    assert store.permissions_of("usr_nobody") == frozenset()


def test_create_user_with_roles_grants_them(store: Store) -> None:
    store.create_role("a", ["svc:a:read"], NOW)
    store.create_role("b", ["svc:b:read"], NOW)
    user = store.create_user("dave", "h", NOW, roles=["a", "b", "a"])
    assert store.permissions_of(user.id) == {"svc:a:read", "svc:b:read"}


def test_create_user_with_an_unknown_role_writes_nothing(store: Store) -> None:
    store.create_role("known", ["svc:a:read"], NOW)
    with pytest.raises(NotFoundError, match="no role 'unknown'"):
        store.create_user("erin", "h", NOW, roles=["known", "unknown"])
    assert store.user_by_username("erin") is None
    assert count(store, t.users) == 0
    assert count(store, t.grants) == 0
    # and the name is still free
    assert store.create_user("erin", "h", NOW).username == "erin"


def test_create_client_with_roles_and_with_an_unknown_role(store: Store) -> None:
    store.create_role("known", ["svc:a:read"], NOW)
    client = store.create_client(
        "good", secret_hash="h", grant_types=["client_credentials"], scope=None, now=NOW, roles=["known"]
    )
    assert store.permissions_of(client.id) == {"svc:a:read"}
    with pytest.raises(NotFoundError):
        store.create_client(
            "bad", secret_hash="h", grant_types=["client_credentials"], scope=None, now=NOW, roles=["nope"]
        )
    assert store.client_by_client_id("bad") is None
    assert count(store, t.clients) == 1
    assert count(store, t.grants) == 1


# refresh families --------------------------------------------------------------------------------


def start(store: Store, **times: int) -> str:
    """A family for a fresh user and client, with its first refresh token ``rt-1``."""
    args = {"now": NOW, "idle_expires_at": NOW + 100, "absolute_expires_at": NOW + 1000, **times}
    return store.start_family(
        client_pk=make_client(store),
        user_id=make_user(store),
        scope=["svc:b:read", "svc:a:read"],
        token_hash="rt-1",
        **args,
    )


def test_start_and_find_a_family(store: Store) -> None:
    user_id = make_user(store)
    client_pk = make_client(store)
    family = store.start_family(
        client_pk=client_pk,
        user_id=user_id,
        scope=["svc:b:read", "svc:a:read"],
        token_hash="rt-1",
        now=NOW,
        idle_expires_at=NOW + 100,
        absolute_expires_at=NOW + 1000,
    )
    record = store.find_refresh("rt-1")
    assert record is not None
    assert record.family_id == family
    assert record.client_pk == client_pk
    assert record.user_id == user_id
    assert record.family_scope == {"svc:a:read", "svc:b:read"}
    assert record.issued_at == NOW
    assert record.expires_at == NOW + 100
    assert record.family_expires_at == NOW + 1000
    assert record.used_at is None
    assert record.family_revoked_at is None
    assert store.find_refresh("rt-unknown") is None


def test_idle_expiry_never_exceeds_the_absolute_expiry(store: Store) -> None:
    start(store, idle_expires_at=NOW + 5000, absolute_expires_at=NOW + 1000)
    assert store.find_refresh("rt-1").expires_at == NOW + 1000  # type: ignore[union-attr]
    assert store.rotate_refresh("rt-1", "rt-2", now=NOW + 10, idle_expires_at=NOW + 9000)
    assert store.find_refresh("rt-2").expires_at == NOW + 1000  # type: ignore[union-attr]


def test_rotate_marks_the_old_token_used_and_issues_the_new_one(store: Store) -> None:
    family = start(store)
    assert store.rotate_refresh("rt-1", "rt-2", now=NOW + 10, idle_expires_at=NOW + 110) is True
    old = store.find_refresh("rt-1")
    new = store.find_refresh("rt-2")
    assert old is not None
    assert new is not None
    assert old.used_at == NOW + 10
    assert new.used_at is None
    assert new.family_id == family
    assert new.issued_at == NOW + 10
    assert new.expires_at == NOW + 110
    assert new.family_scope == old.family_scope


def test_rotating_a_used_token_returns_false_and_issues_nothing(store: Store) -> None:
    start(store)
    assert store.rotate_refresh("rt-1", "rt-2", now=NOW + 10, idle_expires_at=NOW + 110)
    assert store.rotate_refresh("rt-1", "rt-3", now=NOW + 20, idle_expires_at=NOW + 120) is False
    assert store.find_refresh("rt-3") is None
    assert store.find_refresh("rt-1").used_at == NOW + 10  # type: ignore[union-attr]


def test_rotating_an_unknown_token_returns_false(store: Store) -> None:
    assert store.rotate_refresh("nope", "rt-2", now=NOW, idle_expires_at=NOW + 1) is False
    assert store.find_refresh("rt-2") is None


def test_rotating_in_a_revoked_family_returns_false(store: Store) -> None:
    family = start(store)
    assert store.revoke_family(family, now=NOW + 5, reason="logout") is True
    assert store.rotate_refresh("rt-1", "rt-2", now=NOW + 10, idle_expires_at=NOW + 110) is False
    assert store.find_refresh("rt-2") is None
    record = store.find_refresh("rt-1")
    assert record is not None
    assert record.used_at is None
    assert record.family_revoked_at == NOW + 5


def test_revoke_family_is_idempotent(store: Store) -> None:
    family = start(store)
    assert store.revoke_family(family, now=NOW + 5, reason="reuse") is True
    assert store.revoke_family(family, now=NOW + 9, reason="logout") is False
    assert store.find_refresh("rt-1").family_revoked_at == NOW + 5  # type: ignore[union-attr]
    assert store.revoke_family("rtf_unknown", now=NOW, reason="x") is False


def test_revoked_families_returns_only_the_revoked_ones(store: Store) -> None:
    user_id = make_user(store)
    client_pk = make_client(store)
    families = [
        store.start_family(
            client_pk=client_pk,
            user_id=user_id,
            scope=[],
            token_hash=f"rt-{i}",
            now=NOW,
            idle_expires_at=NOW + 100,
            absolute_expires_at=NOW + 1000,
        )
        for i in range(3)
    ]
    assert store.revoked_families(families) == frozenset()
    store.revoke_family(families[0], now=NOW, reason="logout")
    store.revoke_family(families[2], now=NOW, reason="logout")
    assert store.revoked_families([*families, "rtf_unknown"]) == {families[0], families[2]}
    assert store.revoked_families([]) == frozenset()
    assert store.find_refresh("rt-1").family_scope == frozenset()  # type: ignore[union-attr]


def test_concurrent_rotation_of_one_token_succeeds_exactly_once(store: Store) -> None:
    family = start(store)
    threads = 8
    barrier = threading.Barrier(threads)
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def rotate(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = store.rotate_refresh("rt-1", f"rt-new-{i}", now=NOW + 1, idle_expires_at=NOW + 100)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=rotate, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert len(results) == threads
    winners = [i for i, ok in results.items() if ok]
    assert len(winners) == 1
    issued = [i for i in range(threads) if store.find_refresh(f"rt-new-{i}") is not None]
    assert issued == winners
    new = store.find_refresh(f"rt-new-{winners[0]}")
    assert new is not None
    assert new.family_id == family
    with store.engine.connect() as conn:
        tokens = conn.scalar(
            select(func.count()).select_from(t.refresh_tokens).where(t.refresh_tokens.c.family_id == family)
        )
    assert tokens == 2


# revoked access tokens ---------------------------------------------------------------------------


def test_revoke_access_token(store: Store) -> None:
    assert not store.is_access_token_revoked("jti-1")
    store.revoke_access_token("jti-1", expires_at=NOW + 600, now=NOW)
    assert store.is_access_token_revoked("jti-1")
    assert not store.is_access_token_revoked("jti-2")
    store.revoke_access_token("jti-1", expires_at=NOW + 600, now=NOW + 1)  # twice is fine
    assert count(store, t.revoked_tokens) == 1


def test_revoking_prunes_entries_long_expired(store: Store) -> None:
    store.revoke_access_token("old", expires_at=NOW, now=NOW - 600)
    store.revoke_access_token("recent", expires_at=NOW + 7000, now=NOW)
    store.revoke_access_token("new", expires_at=NOW + 8000, now=NOW + 7200)
    assert not store.is_access_token_revoked("old")  # expired over an hour before: nobody accepts it
    assert store.is_access_token_revoked("recent")
    assert store.is_access_token_revoked("new")


# brute-force throttle ----------------------------------------------------------------------------


def test_update_throttle_applies_the_step_to_every_key_at_once(store: Store) -> None:
    seen: list[dict[str, ThrottleState | None]] = []

    def fail(states: dict[str, ThrottleState | None]) -> dict[str, ThrottleState | None]:
        seen.append(states)
        after: dict[str, ThrottleState | None] = {}
        for key, before in states.items():
            failures = (before.failures if before else 0) + 1
            start = before.window_started_at if before else NOW
            after[key] = ThrottleState(key, failures, start, failures // 3, NOW + 60 if failures >= 3 else 0)
        return after

    keys = ["account:alice", "source:127.0.0.1"]
    first = store.update_throttle(keys, fail)
    assert seen == [{"account:alice": None, "source:127.0.0.1": None}]
    assert first["account:alice"] is not None
    assert first["account:alice"].failures == 1
    store.update_throttle(keys, fail)
    third = store.update_throttle(["account:alice"], fail)
    assert third["account:alice"] == ThrottleState("account:alice", 3, NOW, 1, NOW + 60)
    assert seen[-1] == {"account:alice": ThrottleState("account:alice", 2, NOW, 0, 0)}

    states = store.throttle_states([*keys, "account:nobody"])
    assert set(states) == set(keys)
    assert states["account:alice"] == ThrottleState("account:alice", 3, NOW, 1, NOW + 60)
    assert states["source:127.0.0.1"] == ThrottleState("source:127.0.0.1", 2, NOW, 0, 0)


def test_throttle_states_of_unknown_keys_is_empty(store: Store) -> None:
    assert store.throttle_states(["account:x"]) == {}
    assert store.throttle_states([]) == {}


def test_update_throttle_clears_a_key_it_maps_to_none_and_keeps_one_it_leaves_out(store: Store) -> None:
    def count(states: dict[str, ThrottleState | None]) -> dict[str, ThrottleState | None]:
        return {k: ThrottleState(k, (s.failures if s else 0) + 1, NOW, 0, 0) for k, s in states.items()}

    store.update_throttle(["account:alice", "account:bob"], count)
    store.update_throttle(["account:alice", "account:bob", "account:nobody"], lambda _: {"account:alice": None})
    assert set(store.throttle_states(["account:alice", "account:bob"])) == {"account:bob"}
    assert store.throttle_states(["account:bob"])["account:bob"].failures == 1
    store.update_throttle(["account:alice"], count)
    assert store.throttle_states(["account:alice"])["account:alice"].failures == 1


def test_client_lookup_with_its_role_permissions(store: Store) -> None:
    """The token endpoint's one round trip: the client and what its roles grant, read together."""
    store.create_role("reader", ["svc:items:read", "svc:tags:read"], NOW)
    pk = store.create_client(
        "reader-app", secret_hash="h", grant_types=["client_credentials"], scope=["svc:items:write"], now=NOW
    ).id
    assert store.grant(pk, "reader", NOW)
    plain = store.client_by_client_id("reader-app")
    assert plain is not None
    assert plain.role_permissions is None
    full = store.client_by_client_id("reader-app", with_permissions=True)
    assert full is not None
    assert full.role_permissions == {"svc:items:read", "svc:tags:read"}
    assert (full.id, full.secret_hash, full.scope, full.grant_types) == (
        pk,
        "h",
        {"svc:items:write"},
        {"client_credentials"},
    )
    assert full.public is False
    assert full.disabled is False
    assert store.client_by_client_id("nobody", with_permissions=True) is None
    bare = store.create_client("bare-app", secret_hash=None, grant_types=["password"], scope=None, now=NOW)
    looked_up = store.client_by_client_id("bare-app", with_permissions=True)
    assert looked_up is not None
    assert (looked_up.id, looked_up.public, looked_up.scope, looked_up.role_permissions) == (
        bare.id,
        True,
        None,
        frozenset(),
    )
