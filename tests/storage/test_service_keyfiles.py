"""Private service keys waiting in the data directory: owner-only files, handed over by exactly one of
several concurrent callers, and no file left behind by a key that was staged and then discarded."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from helpers import at_once

from chit.errors import RefusedError
from chit.storage.service_keyfiles import ServiceKeyFiles

PRIVATE = "ed25519-private/" + "ab" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_placed_key_is_owner_only_and_handed_over_once(tmp_path: Path) -> None:
    files = ServiceKeyFiles(tmp_path)
    files.place(files.stage("svc", PRIVATE), "svc")
    assert files.waiting("svc")
    assert mode(files.dir) == 0o700
    assert mode(files.path("svc")) == 0o600
    assert files.take("svc") == PRIVATE
    assert files.take("svc") is None
    assert list(files.dir.iterdir()) == []


def test_of_concurrent_hand_overs_exactly_one_gets_the_key(tmp_path: Path) -> None:
    files = ServiceKeyFiles(tmp_path)
    files.place(files.stage("svc", PRIVATE), "svc")
    got = at_once(8, lambda _: files.take("svc"))
    assert (got.count(PRIVATE), got.count(None)) == (1, 7)
    assert list(files.dir.iterdir()) == []


def test_a_discarded_key_leaves_nothing(tmp_path: Path) -> None:
    files = ServiceKeyFiles(tmp_path)
    staged = files.stage("svc", PRIVATE)
    assert mode(staged) == 0o600
    assert not files.waiting("svc")  # staged is not waiting: its public half is not committed yet
    files.discard(staged)
    assert list(files.dir.iterdir()) == []
    files.remove("svc")  # nothing waiting: a no-op


@pytest.mark.parametrize("bad", ["../keys/biscuit-1", "a/b", ".hidden", "", "UPPER"])
def test_a_service_id_never_leads_out_of_the_directory(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RefusedError):
        ServiceKeyFiles(tmp_path).path(bad)
