"""``Turns``: the lock a process's SQLite writers share is handed out in the order they asked."""

from __future__ import annotations

import threading
import time

from chit.storage.sql.turns import Turns


def waiting(turns: Turns, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(turns._waiters) < count:
        assert time.monotonic() < deadline, "the waiters never queued"
        time.sleep(0.001)


def test_waiters_get_the_turn_in_the_order_they_came() -> None:
    turns = Turns()
    assert turns.acquire(timeout=1)
    order: list[int] = []

    def take(n: int) -> None:
        assert turns.acquire(timeout=10)
        order.append(n)
        turns.release()

    threads = []
    for n in range(8):
        thread = threading.Thread(target=take, args=(n,))
        thread.start()
        waiting(turns, n + 1)
        threads.append(thread)
    turns.release()
    for thread in threads:
        thread.join()
    assert order == list(range(8))
    assert turns.acquire(timeout=0)  # free again


def test_a_releasing_thread_asking_again_waits_behind_the_others() -> None:
    turns = Turns()
    assert turns.acquire(timeout=1)
    got: list[str] = []
    other = threading.Thread(target=lambda: (turns.acquire(timeout=10), got.append("other"), turns.release()))
    other.start()
    waiting(turns, 1)
    turns.release()
    assert turns.acquire(timeout=10)  # after the waiter, not before it
    got.append("me")
    turns.release()
    other.join()
    assert got == ["other", "me"]


def test_a_wait_that_runs_out_says_so_and_leaves_the_queue() -> None:
    turns = Turns()
    assert turns.acquire(timeout=1)
    started = time.monotonic()
    assert not turns.acquire(timeout=0.05)
    assert time.monotonic() - started >= 0.05
    assert len(turns._waiters) == 0
    turns.release()
    assert turns.acquire(timeout=0)
