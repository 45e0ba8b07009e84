"""The revocation feed's events in the store, on a SQLite file and the real PostgreSQL: appended with the
revocation they announce or not at all, read by cursor in commit order, pruned once useless."""

from __future__ import annotations

import threading

import pytest

from chit.storage.sql.revocation_events import RETENTION
from chit.storage.sql.store import Store

NOW = 1_700_000_000


def test_events_are_numbered_in_order_and_read_after_a_cursor(store: Store) -> None:
    assert store.last_revocation_event_id() == 0
    first = store.append_revocation_event("token", "jti-1", expires=NOW + 600, now=NOW)
    second = store.append_revocation_event("subject", "usr_a", expires=NOW + 601, not_before=NOW + 1, now=NOW)
    assert 0 < first.id < second.id
    assert store.last_revocation_event_id() == second.id
    assert store.revocation_events(0, limit=10, now=NOW) == [first, second]
    assert store.revocation_events(first.id, limit=10, now=NOW) == [second]
    assert store.revocation_events(second.id, limit=10, now=NOW) == []
    assert store.revocation_events(0, limit=1, now=NOW) == [first]
    assert second.wire() == {
        "id": second.id,
        "kind": "subject",
        "value": "usr_a",
        "not_before": NOW + 1,
        "expires": NOW + 601,
    }


def test_an_event_whose_tokens_all_expired_is_left_out_and_later_pruned(store: Store) -> None:
    old = store.append_revocation_event("token", "jti-old", expires=NOW + 10, now=NOW)
    live = store.append_revocation_event("token", "jti-live", expires=NOW + 600, now=NOW)
    assert store.revocation_events(0, limit=10, now=NOW + 11) == [live]
    assert store.revocation_events(0, limit=10, now=0) == [old, live]  # still kept for a late reader
    store.append_revocation_event("token", "jti-new", expires=NOW + 9999, now=NOW + 11 + RETENTION)
    assert [e.value for e in store.revocation_events(0, limit=10, now=0)] == ["jti-live", "jti-new"]


def test_an_id_is_never_reused_after_the_newest_event_is_pruned(store: Store) -> None:
    gone = store.append_revocation_event("token", "jti-1", expires=NOW, now=NOW)
    later = store.append_revocation_event("token", "jti-2", expires=NOW + 99_999, now=NOW + RETENTION + 1)
    assert later.id > gone.id
    assert store.revocation_events(0, limit=10, now=0) == [later]
    store.append_revocation_event("token", "jti-3", expires=NOW, now=NOW)
    newest = store.last_revocation_event_id()
    assert newest > later.id


def test_a_revocation_and_its_event_are_written_together_or_not_at_all(store: Store) -> None:

    def fail_between_the_writes() -> None:
        with store.atomically():
            assert store.revoke_access_token("jti-1", expires_at=NOW + 600, now=NOW) is True
            store.append_revocation_event("token", "jti-1", expires=NOW + 600, now=NOW)
            raise RuntimeError("the process failed before the transaction committed")

    with pytest.raises(RuntimeError):
        fail_between_the_writes()
    assert store.is_access_token_revoked("jti-1") is False
    assert store.revocation_events(0, limit=10, now=0) == []
    # a retry then revokes and publishes, once
    with store.atomically():
        assert store.revoke_access_token("jti-1", expires_at=NOW + 600, now=NOW) is True
        event = store.append_revocation_event("token", "jti-1", expires=NOW + 600, now=NOW)
    assert store.is_access_token_revoked("jti-1") is True
    assert store.revocation_events(0, limit=10, now=0) == [event]


def test_revoked_values_tell_the_latest_cut_of_each_value_still_in_force(store: Store) -> None:
    store.append_revocation_event("key", "kid-1", expires=NOW + 100, not_before=NOW, now=NOW)
    store.append_revocation_event("key", "kid-1", expires=NOW + 200, not_before=NOW + 50, now=NOW)
    store.append_revocation_event("key", "kid-2", expires=NOW + 5, not_before=NOW, now=NOW)
    store.append_revocation_event("client", "kid-1", expires=NOW + 100, not_before=NOW + 7, now=NOW)
    assert store.revoked_values("key", now=NOW + 10) == {"kid-1": NOW + 50}
    assert store.revoked_values("client", now=NOW) == {"kid-1": NOW + 7}


def test_logging_out_everywhere_moves_the_cut_forward_and_ends_every_live_session(store: Store) -> None:
    user = store.create_user("alice", "not-a-real-hash", NOW)
    client = store.create_client("app", secret_hash=None, grant_types=["password"], scope=None, now=NOW)
    families = [
        store.start_family(
            client_pk=client.id,
            user_id=user.id,
            scope=[],
            token_hash=f"{n:064d}",
            now=NOW,
            idle_expires_at=NOW + 600,
            absolute_expires_at=NOW + 6000,
        )
        for n in range(3)
    ]
    store.revoke_family(families[0], now=NOW, reason="revoked")
    assert store.revoke_user_tokens("ALICE", NOW + 5).revoked_before == NOW + 6
    assert sorted(store.revoke_families_of(user.id, now=NOW + 5, reason="logout")) == sorted(families[1:])
    assert store.revoke_families_of(user.id, now=NOW + 6, reason="logout") == []
    assert store.revoke_user_tokens("alice", NOW).revoked_before == NOW + 6  # never moves back
    assert store.user_by_id(user.id).disabled is False  # type: ignore[union-attr]


def test_concurrent_appends_become_visible_in_id_order(store: Store) -> None:
    """A reader following by cursor while 8 writers append must see every event: no id may appear
    after a larger one was read (the feed's ids are drawn in commit order)."""
    writers, each = 8, 15
    seen: list[int] = []
    done = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        cursor = 0
        try:
            while True:
                finished = done.is_set()
                page = store.revocation_events(cursor, limit=1000, now=0)
                seen.extend(e.id for e in page)
                if page:
                    cursor = page[-1].id
                elif finished:
                    return
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    def write(n: int) -> None:
        try:
            for i in range(each):
                with store.atomically():
                    store.revoke_access_token(f"jti-{n}-{i}", expires_at=NOW + 600, now=NOW)
                    store.append_revocation_event("token", f"jti-{n}-{i}", expires=NOW + 600, now=NOW)
        except BaseException as exc:
            failures.append(exc)

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert failures == []
    every = [e.id for e in store.revocation_events(0, limit=1000, now=0)]
    assert len(every) == writers * each
    assert seen == every  # the follower missed none and saw them in order
