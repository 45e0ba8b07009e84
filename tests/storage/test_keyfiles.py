"""``chit.storage.keyfiles``: Biscuit root keys have ids, rotate with the JWT keys (the new one mints at once),
stay published for the retention after the next one took over, then are dropped; a key set written before
root keys had ids keeps working (id 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chit.core import biscuit
from chit.errors import ConfigurationError
from chit.storage.keyfiles import KeyStore

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(seconds=960)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    keystore = KeyStore(tmp_path, RETENTION)
    assert keystore.initialize("EdDSA", START)
    return keystore


def manifest(store: KeyStore) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(store.keyset_path.read_text())
    return loaded


def test_the_first_root_key_has_id_1_and_mints(store: KeyStore) -> None:
    keys = store.load()
    assert [k.id for k in keys.root_keys] == [1]
    assert keys.minting_root_key.id == 1
    assert keys.biscuit_public_keys == (biscuit.root_public_key(keys.biscuit_private_keys[0]),)
    assert keys.biscuit_public_keys_by_id == {1: keys.biscuit_public_keys[0]}
    assert manifest(store)["biscuit"] == [{"id": 1, "file": "biscuit-1.key", "created_at": int(START.timestamp())}]
    assert "ed25519-private" not in repr(keys.minting_root_key)


def test_rotation_adds_a_root_key_that_mints_at_once(store: KeyStore) -> None:
    first = store.load().minting_root_key
    later = START + timedelta(seconds=30)
    rotation = store.rotate("EdDSA", later, delay=timedelta(seconds=300))
    assert rotation.root_key.id == 2
    keys = store.load()
    assert [k.id for k in keys.root_keys] == [2, 1]
    assert keys.minting_root_key == rotation.root_key
    assert keys.biscuit_public_keys == (rotation.root_key.public_key, first.public_key)  # newest first
    assert [k.id for k in keys.published_root_keys(later)] == [2, 1]
    assert (store.dir / "biscuit-2.key").stat().st_mode & 0o777 == 0o600
    # the JWT key waits for caches; the root key does not
    assert rotation.signing_key.signs_from == later + timedelta(seconds=300)


def test_an_old_root_key_stays_published_for_the_retention_then_is_dropped(store: KeyStore) -> None:
    second_at = START + timedelta(seconds=10)
    store.rotate("EdDSA", second_at, delay=timedelta(0))
    keys = store.load()
    assert [k.id for k in keys.published_root_keys(second_at + RETENTION - timedelta(seconds=1))] == [2, 1]
    assert [k.id for k in keys.published_root_keys(second_at + RETENTION)] == [2]
    # the next rotation after the retention forgets key 1 and deletes its file
    third_at = second_at + RETENTION + timedelta(seconds=5)
    assert store.rotate("EdDSA", third_at, delay=timedelta(0)).root_key.id == 3
    assert [k.id for k in store.load().root_keys] == [3, 2]
    assert not (store.dir / "biscuit-1.key").exists()
    # ids are never reused, even once the oldest keys are gone
    fourth_at = third_at + 2 * RETENTION
    assert store.rotate("EdDSA", fourth_at, delay=timedelta(0)).root_key.id == 4
    assert [k.id for k in store.load().root_keys] == [4, 3]  # 3's chits may live on; 2's cannot


def test_a_key_set_written_before_root_key_ids_reads_as_id_1(store: KeyStore) -> None:
    legacy = manifest(store)
    legacy["biscuit"] = [{"file": "biscuit-1.key", "created_at": int(START.timestamp())}]
    store.keyset_path.write_text(json.dumps(legacy))
    keys = store.load()
    assert [k.id for k in keys.root_keys] == [1]
    assert store.rotate("EdDSA", START + timedelta(seconds=1), delay=timedelta(0)).root_key.id == 2
    entries = manifest(store)["biscuit"]
    assert isinstance(entries, list)
    assert [e.get("id") for e in entries] == [2, None]  # the old entry kept as written
    assert [k.id for k in store.load().root_keys] == [2, 1]


def test_a_root_key_entry_without_any_id_is_a_configuration_error(store: KeyStore) -> None:
    broken = manifest(store)
    broken["biscuit"] = [{"file": "root.key", "created_at": int(START.timestamp())}]
    store.keyset_path.write_text(json.dumps(broken))
    with pytest.raises(ConfigurationError, match="without an id"):
        store.load()


def test_a_chit_minted_before_a_rotation_verifies_with_the_old_published_key(store: KeyStore) -> None:
    before = store.load().minting_root_key
    token = biscuit.mint_chit(
        before.private_key,
        before.id,
        issuer="http://127.0.0.1",
        subject="usr_a",
        client_id="c",
        permissions=["a:b:c"],
        actors=[],
        expires_at=int(START.timestamp()) + 600,
    )
    store.rotate("EdDSA", START + timedelta(seconds=1), delay=timedelta(0))
    keys = store.load()
    assert biscuit.root_key_id(token) == 1
    assert biscuit.parse_chit(token, keys.biscuit_public_keys_by_id).block_count() == 1
