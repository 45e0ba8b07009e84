"""Brute-force limits under concurrent attempts (DESIGN §4 "Brute force"; issue 12, finding 5).

Against real ``chit serve --workers 2`` processes, on SQLite and on PostgreSQL: attempts sent all at
once must not get more real password checks (Argon2) than the limit allows, because each attempt is
counted before its password is checked, in one transaction over the account and the source. How many
checks ran is read off the answers: a checked attempt answers 400 ``invalid_grant`` (or 200 for the
right password), a refused one 429 with ``Retry-After``.

A burst that reaches Argon2 runs against a 60 s lock: on two cores its ten checks take about two
seconds, and a request of the burst that a busy worker only takes up after a 2 s lock has passed
would rightly get a check again ("after a lock the next failure locks again"), which would blur the
count. Where a lock has to pass within the test, it is 2 s, doubling, and the burst against it costs
no Argon2; lock times are whole seconds on the server's clock (the tests' clock too), so the lock is
set just after a second begins and then lasts nearly 2 s.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from helpers import ChitServer, free_port

from chit.errors import TooManyAttemptsError
from chit.server.throttle import Attempt, LoginThrottle, ThrottlePolicy, account_key, source_key
from chit.storage.records import ThrottleState
from chit.storage.sql.store import Store

LOCK_SECONDS = 2
LONG_LOCK_SECONDS = 60
ACCOUNT_MAX_FAILURES = 10  # DESIGN §4's default
SOURCE_MAX_FAILURES = 12  # lowered for the per-source burst only
BURST = 40
PASSWORD = "the right password"
WRONG = "a wrong password"

Serve = Callable[..., ChitServer]


@pytest.fixture(params=["sqlite", "postgresql"])
def serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """Start ``chit serve --workers 2`` on the parametrized database; stopped after the test."""
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    started: list[ChitServer] = []

    def start(lock_seconds: int = LONG_LOCK_SECONDS, source_max_failures: int = 100_000) -> ChitServer:
        server = ChitServer(
            tmp_path_factory.mktemp("race") / "data",
            free_port(),
            database_url=database_url,
            extra_env={
                "CHIT_LOCK_SECONDS": str(lock_seconds),
                "CHIT_MAX_LOCK_SECONDS": str(4 * lock_seconds),
                "CHIT_SOURCE_MAX_FAILURES": str(source_max_failures),
            },
        )
        server.start("--workers", "2")
        started.append(server)
        warm_up(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def form(username: str, password: str) -> dict[str, str]:
    return {"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password}


def login(server: ChitServer, username: str, password: str) -> httpx.Response:
    return httpx.post(server.token_url, data=form(username, password), timeout=60)


def warm_up(server: ChitServer) -> None:
    """Open the workers' threads and database connections with requests that cost no login attempt
    (a malformed scope is refused before the throttle), so that a cold start does not slow a burst."""
    bad_scope = {**form("warm-up", WRONG), "scope": "not a permission"}
    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=BURST)) as client:
        for _ in range(2):
            threads = [
                threading.Thread(target=client.post, args=("/oauth2/token",), kwargs={"data": bad_scope})
                for _ in range(BURST)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)


def start_of_second() -> None:
    """Wait until just after a second of the wall clock begins (the server's locks count whole seconds)."""
    time.sleep(1.02 - time.time() % 1.0)


def burst(
    server: ChitServer, attempts: list[tuple[str, str]], before: Callable[[], object] = lambda: None
) -> list[httpx.Response]:
    """Send every (username, password) at once, each on its own open connection, right after ``before()``."""
    ready = threading.Barrier(len(attempts) + 1)
    answers: list[httpx.Response | BaseException | None] = [None] * len(attempts)

    def attempt(index: int, username: str, password: str) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                client.get("/healthz").raise_for_status()  # connect first: only the logins race
                ready.wait(timeout=60)
                answers[index] = client.post("/oauth2/token", data=form(username, password))
        except BaseException as exc:  # reported below, in the test's thread
            answers[index] = exc

    threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    before()
    ready.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=120)
    responses = []
    for answer in answers:
        if not isinstance(answer, httpx.Response):
            raise AssertionError(f"an attempt did not complete: {answer!r}")
        responses.append(answer)
    return responses


def retry_after(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.headers.get("cache-control") == "no-store"
    value = response.headers["retry-after"]
    assert re.fullmatch(r"[1-9][0-9]*", value), value
    return int(value)


def checked(responses: list[httpx.Response]) -> int:
    """How many attempts got a real password check; every other one must be a 429 with Retry-After."""
    tally = Counter(r.status_code for r in responses)
    for response in responses:
        if response.status_code == 400:
            assert response.json()["error"] == "invalid_grant", response.text
        elif response.status_code != 200:
            retry_after(response)
    assert set(tally) <= {200, 400, 429}, tally
    slowest = max(r.elapsed.total_seconds() for r in responses if r.status_code == 429) if tally[429] else 0
    print(f"\n{len(responses)} at once: {dict(sorted(tally.items()))}, slowest refusal {slowest:.2f} s")
    return tally[200] + tally[400]


def test_simultaneous_wrong_passwords_get_at_most_the_limit_of_checks(serve: Serve) -> None:
    chit = serve()
    chit.add_user("race-kate", PASSWORD)
    responses = burst(chit, [("race-kate", WRONG)] * BURST)
    assert checked(responses) == ACCOUNT_MAX_FAILURES  # at most the limit; and the lock holds, so exactly
    # the account is locked now, for the right password too
    retry_after(login(chit, "race-kate", PASSWORD))


def test_a_burst_against_a_locked_account_is_refused_whole_and_resets_nothing(serve: Serve) -> None:
    chit = serve(lock_seconds=LOCK_SECONDS)
    chit.add_user("race-lock", PASSWORD)
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        assert login(chit, "race-lock", WRONG).status_code == 400
    locked_at = 0

    def lock() -> None:  # the 10th failure, just after a second begins: locked until locked_at + 2
        nonlocal locked_at
        start_of_second()
        locked_at = int(time.time())
        assert login(chit, "race-lock", WRONG).status_code == 400

    # then 20 wrong passwords and the right one, at once, while the lock holds: all refused, none counted
    responses = burst(chit, [("race-lock", WRONG)] * 20 + [("race-lock", PASSWORD)], before=lock)
    assert checked(responses) == 0
    assert 1 <= retry_after(responses[-1]) <= LOCK_SECONDS  # the right password too
    # the lock passes; the count was neither reset by the right password nor grown by the refusals,
    # so the next wrong password gets a check and locks again, for twice as long
    time.sleep(max(0.0, locked_at + LOCK_SECONDS + 0.2 - time.time()))
    assert login(chit, "race-lock", WRONG).status_code == 400
    assert 2 * LOCK_SECONDS - 1 <= retry_after(login(chit, "race-lock", PASSWORD)) <= 2 * LOCK_SECONDS


def test_an_unknown_username_is_bounded_alike(serve: Serve) -> None:
    chit = serve()
    responses = burst(chit, [("race-nobody", WRONG)] * BURST)
    assert checked(responses) == ACCOUNT_MAX_FAILURES
    retry_after(login(chit, "race-nobody", WRONG))


def test_simultaneous_failures_from_one_source_get_at_most_its_limit_of_checks(serve: Serve) -> None:
    chit = serve(source_max_failures=SOURCE_MAX_FAILURES)
    chit.add_user("race-victim", PASSWORD)
    # one attempt per name: no account comes near its own limit, only the source does
    responses = burst(chit, [(f"race-probe-{i:02d}", WRONG) for i in range(BURST)])
    assert checked(responses) == SOURCE_MAX_FAILURES
    retry_after(login(chit, "race-victim", PASSWORD))


# --- the throttle itself, on both databases, without a server ------------------------------------

NOW = 1_700_000_000


@pytest.fixture
def throttle(store: Store) -> LoginThrottle:
    """The throttle on the shared ``store`` fixture: on SQLite and on PostgreSQL."""
    return LoginThrottle(store, ThrottlePolicy(source_max_failures=SOURCE_MAX_FAILURES))


def reserve_at_once(throttle: LoginThrottle, names: list[str]) -> list[Attempt | None]:
    """``reserve`` from one thread per name, released together; None where it was refused."""
    ready = threading.Barrier(len(names))
    outcomes: list[Attempt | BaseException | None] = [None] * len(names)

    def reserve(index: int, name: str) -> None:
        ready.wait(timeout=60)
        try:
            outcomes[index] = throttle.reserve(name, "10.0.0.1", NOW)
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=reserve, args=(i, name)) for i, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, TooManyAttemptsError):
            raise outcome
    return [o if isinstance(o, Attempt) else None for o in outcomes]


def state(throttle: LoginThrottle, key: str) -> ThrottleState | None:
    return throttle.store.throttle_states([key]).get(key)


def test_concurrent_reservations_stop_at_the_account_limit(throttle: LoginThrottle) -> None:
    attempts = reserve_at_once(throttle, ["kate"] * BURST)
    assert sum(a is not None for a in attempts) == ACCOUNT_MAX_FAILURES
    account = state(throttle, account_key("kate"))
    assert account is not None
    assert (account.failures, account.lock_level) == (ACCOUNT_MAX_FAILURES, 1)  # refusals were not counted


def test_concurrent_reservations_stop_at_the_source_limit(throttle: LoginThrottle) -> None:
    attempts = reserve_at_once(throttle, [f"probe-{i}" for i in range(BURST)])
    assert sum(a is not None for a in attempts) == SOURCE_MAX_FAILURES


def test_a_success_undoes_the_lock_its_own_reservation_set(throttle: LoginThrottle) -> None:
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        throttle.reserve("kate", "10.0.0.1", NOW)
    tenth = throttle.reserve("kate", "10.0.0.1", NOW)  # counted as the 10th failure: locks
    assert tenth.account.locked_until > NOW
    with pytest.raises(TooManyAttemptsError):
        throttle.reserve("kate", "10.0.0.1", NOW + 1)  # refused while its password is checked
    throttle.succeeded(tenth, NOW + 1)  # it was right: 9 failures and a success, no lock
    assert state(throttle, account_key("kate")) is None
    throttle.reserve("kate", "10.0.0.1", NOW + 1)


def test_a_success_never_lifts_a_lock_another_attempt_set(throttle: LoginThrottle) -> None:
    first = throttle.reserve("kate", "10.0.0.1", NOW)  # the right password, still being checked...
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        throttle.reserve("kate", "10.0.0.1", NOW)  # ...while 9 more arrive: the 10th attempt locks
    throttle.succeeded(first, NOW + 1)
    with pytest.raises(TooManyAttemptsError):
        throttle.reserve("kate", "10.0.0.1", NOW + 1)
    account = state(throttle, account_key("kate"))
    assert account is not None
    assert account.failures == ACCOUNT_MAX_FAILURES


def test_a_success_before_any_lock_resets_the_account(throttle: LoginThrottle) -> None:
    first = throttle.reserve("kate", "10.0.0.1", NOW)
    throttle.reserve("kate", "10.0.0.1", NOW)
    throttle.succeeded(first, NOW + 1)
    assert state(throttle, account_key("kate")) is None


def test_a_success_takes_only_its_own_attempt_off_the_source(throttle: LoginThrottle) -> None:
    throttle.reserve("probe", "10.0.0.1", NOW)
    mine = throttle.reserve("kate", "10.0.0.1", NOW)
    throttle.succeeded(mine, NOW + 1)  # nothing counted since: the source is as it was before it
    source = state(throttle, source_key("10.0.0.1"))
    assert source is not None
    assert source.failures == 1
    mine = throttle.reserve("kate", "10.0.0.1", NOW + 2)
    throttle.reserve("probe", "10.0.0.1", NOW + 2)
    throttle.succeeded(mine, NOW + 3)  # counted since: one less, the other failures stay
    source = state(throttle, source_key("10.0.0.1"))
    assert source is not None
    assert source.failures == 2
    assert source.window_started_at == NOW  # its window goes on


def test_a_refused_attempt_writes_nothing(throttle: LoginThrottle) -> None:
    for _ in range(ACCOUNT_MAX_FAILURES):
        throttle.reserve("kate", "10.0.0.1", NOW)
    before = (state(throttle, account_key("kate")), state(throttle, source_key("10.0.0.1")))
    with pytest.raises(TooManyAttemptsError):
        throttle.reserve("kate", "10.0.0.1", NOW + 1)
    assert (state(throttle, account_key("kate")), state(throttle, source_key("10.0.0.1"))) == before
    assert state(throttle, source_key("10.0.0.2")) is None
