"""Service keys in the store, on a SQLite file and the real PostgreSQL: a registration stores a key in
its own transaction, keeps the one a service has unless told to replace it, never gives one key to two
services; ``set_service_public_key`` replaces only the key it was told of; the published list."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from chit.errors import ConflictError, NotFoundError
from chit.policy import administration as rules
from chit.policy.manifest import parse_manifest
from chit.storage import tables as t
from chit.storage.engine import create_database_engine
from chit.storage.records import Registration
from chit.storage.sql.store import Store

NOW = 1_700_000_000
KEY_A = "ed25519/" + "a" * 64
KEY_B = "ed25519/" + "b" * 64
KEY_C = "ed25519/" + "c" * 64


def manifest_text(service_id: str, extra: str = "") -> str:
    return f'id = "{service_id}"\n[permissions]\n"things:read" = "Read"\n{extra}'


def register(store: Store, service_id: str, public_key: str | None = None, **options: bool) -> Registration:
    manifest = parse_manifest(manifest_text(service_id), "test.toml")
    return store.register_service(
        manifest,
        admin_role=(rules.service_admin_role(service_id), str(rules.service_admin_permission(service_id))),
        secret_hash="a" * 64,
        now=NOW,
        public_key=public_key,
        **options,
    )


def key_of(store: Store, service_id: str) -> str | None:
    record = store.service(service_id)
    assert record is not None
    return record.public_key


def test_a_service_registered_without_a_key_has_none(store: Store) -> None:
    assert register(store, "plain") == Registration(created=True, changed=True, client_created=True)
    assert key_of(store, "plain") is None
    assert store.service_public_keys() == []


def test_registration_stores_the_key_of_a_new_service(store: Store) -> None:
    outcome = register(store, "keyed", KEY_A)
    assert outcome == Registration(created=True, changed=True, client_created=True, key_set=True)
    assert key_of(store, "keyed") == KEY_A
    assert [s.public_key for s in store.services()] == [KEY_A]


def test_registration_keeps_the_key_a_service_has_unless_told_to_replace_it(store: Store) -> None:
    register(store, "kept", KEY_A)
    again = register(store, "kept", KEY_B)
    assert again == Registration(created=False, changed=False, client_created=False)
    assert key_of(store, "kept") == KEY_A
    same = register(store, "kept", KEY_A, replace_key=True)
    assert same == Registration(created=False, changed=False, client_created=False)

    replaced = register(store, "kept", KEY_B, replace_key=True)
    assert replaced == Registration(
        created=False, changed=False, client_created=False, key_set=True, replaced_key=KEY_A
    )
    assert key_of(store, "kept") == KEY_B


def test_a_service_registered_before_keys_gets_one_on_its_next_registration(store: Store) -> None:
    register(store, "older")
    outcome = register(store, "older", KEY_A)
    assert (outcome.changed, outcome.key_set, outcome.replaced_key) == (False, True, None)
    assert key_of(store, "older") == KEY_A


def test_one_key_never_names_two_services(store: Store) -> None:
    register(store, "first", KEY_A)
    with pytest.raises(ConflictError, match="service 'first'"):
        register(store, "second", KEY_A)
    assert store.service("second") is None  # the whole registration is refused, not only its key
    register(store, "second", KEY_B)
    with pytest.raises(ConflictError, match="service 'first'"):
        register(store, "second", KEY_A, replace_key=True)
    with pytest.raises(ConflictError, match="service 'first'"):
        store.set_service_public_key("second", KEY_A, replacing=KEY_B)
    assert key_of(store, "second") == KEY_B


def test_the_unique_index_holds_where_the_check_is_bypassed(store: Store) -> None:
    register(store, "first", KEY_A)
    register(store, "second")
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(update(t.services).where(t.services.c.id == "second").values(public_key=KEY_A))


def test_set_replaces_only_the_key_it_was_told_of(store: Store) -> None:
    register(store, "rotating")
    assert store.set_service_public_key("rotating", KEY_A, replacing=KEY_C) is False
    assert key_of(store, "rotating") is None
    assert store.set_service_public_key("rotating", KEY_A, replacing=None) is True
    assert store.set_service_public_key("rotating", KEY_B, replacing=None) is False
    assert key_of(store, "rotating") == KEY_A
    assert store.set_service_public_key("rotating", KEY_B, replacing=KEY_A) is True
    assert key_of(store, "rotating") == KEY_B
    with pytest.raises(NotFoundError):
        store.set_service_public_key("nobody", KEY_C, replacing=None)


def test_the_published_list_is_every_key_by_service_id(store: Store) -> None:
    register(store, "zulu", KEY_A)
    register(store, "alpha", KEY_B)
    register(store, "keyless")
    register(store, "mike", KEY_C)
    assert store.service_public_keys() == [("alpha", KEY_B), ("mike", KEY_C), ("zulu", KEY_A)]
    store.remove_service("mike")
    assert store.service_public_keys() == [("alpha", KEY_B), ("zulu", KEY_A)]


def test_of_two_concurrent_rotations_one_wins(database_url: str, store: Store) -> None:
    register(store, "raced", KEY_A)
    engines = [create_database_engine(database_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[str, bool | Exception] = {}

    def rotate(engine_index: int, key: str) -> None:
        barrier.wait()
        try:
            results[key] = Store(engines[engine_index]).set_service_public_key("raced", key, replacing=KEY_A)
        except Exception as exc:  # a lock that times out counts as a loss, never as a second win
            results[key] = exc

    threads = [threading.Thread(target=rotate, args=(i, k)) for i, k in enumerate((KEY_B, KEY_C))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    winners = [k for k, won in results.items() if won is True]
    assert len(winners) == 1, results
    assert key_of(store, "raced") == winners[0]
