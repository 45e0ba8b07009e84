"""Usernames are ASCII and compared in one normalised form (DESIGN §4 "Users"; issue 12, finding 10).

Unicode case folding made the Kelvin sign K (U+212A) log in as ``kate``: ``"\\u212aate".casefold()`` is
``"kate"``. Now only ASCII letters fold, so such a name matches no user (and the throttle counts it
like any unknown name), no such user can be created, and ``KATE`` is still ``kate``.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from helpers import ChitServer, ModuleServers

from chit.errors import RefusedError
from chit.policy.usernames import is_valid_username, username_key
from chit.server.throttle import account_key
from chit.storage.sql.store import Store

KELVIN_KATE = "\u212aate"  # KELVIN SIGN, then "ate"
PASSWORD = "kate's right password"
WRONG = "a wrong password"
LOCK_SECONDS = 2


def test_only_ascii_letters_fold() -> None:
    assert KELVIN_KATE.casefold() == "kate"  # the trap
    assert username_key("KATE") == username_key("Kate") == username_key("kate") == "kate"
    assert username_key(KELVIN_KATE) != username_key("kate")
    assert username_key(KELVIN_KATE) == KELVIN_KATE  # non-ASCII is kept as it is, never folded
    for spoof in ("\u0130nes", "stra\u00dfe", "\uff4bate", "ka\u0301te"):  # dotted I, sharp s, fullwidth k, accent
        assert not username_key(spoof).isascii()
    assert account_key("KATE") == account_key("kate") != account_key(KELVIN_KATE)


@pytest.mark.parametrize("name", ["kate", "K8", "a.b_c@d+e-f", "x" * 64])
def test_valid_usernames(name: str) -> None:
    assert is_valid_username(name)


@pytest.mark.parametrize("name", [KELVIN_KATE, "k\u00e4te", "", "x" * 65, "kate\n", " kate", ".kate", "ka te"])
def test_invalid_usernames(name: str) -> None:
    assert not is_valid_username(name)


def test_the_store_matches_names_by_their_key_only(store: Store) -> None:
    kate = store.create_user("kate", "hash", 1_700_000_000)
    found = store.user_by_username("KATE")
    assert found is not None
    assert found.id == kate.id
    assert store.user_by_username(KELVIN_KATE) is None
    with pytest.raises(RefusedError):
        store.create_user(KELVIN_KATE, "hash", 1_700_000_000)


# --- against a real server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server(
        "usernames", env={"CHIT_LOCK_SECONDS": str(LOCK_SECONDS), "CHIT_SOURCE_MAX_FAILURES": "100000"}
    )
    server.add_user("kate", PASSWORD)
    return server


def login(chit: ChitServer, username: str, password: str) -> httpx.Response:
    data = {"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password}
    return httpx.post(chit.token_url, data=data, timeout=30)


def test_the_kelvin_sign_does_not_log_in_as_kate(chit: ChitServer) -> None:
    response = login(chit, KELVIN_KATE, PASSWORD)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert response.json() == login(chit, "nobody-at-all", PASSWORD).json()  # like any unknown name


def test_ascii_case_still_does_not_matter(chit: ChitServer) -> None:
    for name in ("kate", "KATE", "Kate"):
        response = login(chit, name, PASSWORD)
        assert response.status_code == 200, (name, response.text)


def test_user_add_refuses_a_non_ascii_name(chit: ChitServer) -> None:
    result = chit.cli("user", "add", KELVIN_KATE, "--password-stdin", input="a long enough password\n")
    assert result.exit_code == 2, (result.stdout, result.stderr)  # a usage error, like any malformed name
    assert "a username is" in " ".join(result.stderr.split())
    assert login(chit, KELVIN_KATE, "a long enough password").status_code == 400  # nothing was created


def test_a_non_ascii_name_is_throttled_like_an_unknown_one_and_apart_from_kate(chit: ChitServer) -> None:
    name = KELVIN_KATE + ".throttled"  # a name no other test has tried
    for _ in range(10):
        assert login(chit, name, WRONG).status_code == 400
    locked = login(chit, name, PASSWORD)
    assert locked.status_code == 429, locked.text
    assert "retry-after" in locked.headers
    assert login(chit, "kate", PASSWORD).status_code == 200  # not kate's account that was counted


def test_a_non_ascii_name_costs_the_same_argon2_work(chit: ChitServer) -> None:
    cases = {"kelvin": (KELVIN_KATE + "2", WRONG), "unknown": ("nobody-2", WRONG), "wrong password": ("kate", WRONG)}
    samples: dict[str, list[float]] = {case: [] for case in cases}
    for round_ in range(4):  # one warm-up, three samples each; kate's count is reset by a success
        for case, (username, password) in cases.items():
            started = time.perf_counter()
            assert login(chit, username, password).status_code == 400
            if round_:
                samples[case].append(time.perf_counter() - started)
    assert login(chit, "kate", PASSWORD).status_code == 200
    medians = {case: statistics.median(times) for case, times in samples.items()}
    for a in medians:
        for b in medians:
            assert 0.5 <= medians[a] / medians[b] <= 2, medians
