"""The audit log: append-only, hash-chained, written by group commit.

Every issuance (and refusal), refresh, reuse detection, exchange, revocation, login failure and
admin change becomes one event. Each event's ``hash`` is SHA-256 over the previous event's hash and
the event's own canonical JSON, so ``chit audit verify`` finds an edited event (its hash no longer
matches) and a deleted one (the next event's ``prev_hash`` no longer matches).

A commit per event would cost more than issuing the token (see shared notes on performance), so a
writer thread commits whatever events queued up while the previous commit ran, in one transaction;
each caller still waits until its own event is committed, so nothing is answered before it is logged.
On SQLite, async callers commit on their own event loop instead, without ever waiting for the
database lock there (that would stall every request of the loop): a batch that finds the lock taken
goes to the writer thread, whose wait is bounded (503 past it, see ``AuditWriteError``).
Secrets never reach this module: callers pass ids, never tokens or passwords.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chit.core.ids import unique_id
from chit.errors import AuditWriteError as AuditWriteError  # its home before chit.errors
from chit.errors import DatabaseBusyError
from chit.storage.records import AuditRecord
from chit.storage.sql.audit import GENESIS_HASH
from chit.storage.sql.store import Store

log = logging.getLogger("chit.audit")
MAX_BATCH = 500
SUCCESS = "success"
FAILURE = "failure"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return unique_id()


@dataclass(frozen=True)
class AuditEvent:
    type: str
    outcome: str = SUCCESS
    client_id: str | None = None
    subject: str | None = None
    actors: tuple[str, ...] = ()  # the delegation chain, current actor first
    token_id: str | None = None
    source: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def _row(event: AuditEvent, now_us: int) -> dict[str, Any]:
    return {
        "id": unique_id(),
        "time": now_us,
        "type": event.type,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "client_id": event.client_id,
        "subject": event.subject,
        "actors": json.dumps(list(event.actors), separators=(",", ":")),
        "token_id": event.token_id,
        "source": event.source,
        "detail": json.dumps(dict(event.detail), sort_keys=True, separators=(",", ":")),
    }


_CHAINED = (
    "id",
    "time",
    "type",
    "outcome",
    "request_id",
    "client_id",
    "subject",
    "actors",
    "token_id",
    "source",
    "detail",
)


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    canonical = json.dumps([row[name] for name in _CHAINED], separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class _Pending:
    __slots__ = ("done", "error", "future", "row")

    def __init__(self, row: dict[str, Any], future: asyncio.Future[None] | None = None) -> None:
        self.row = row
        self.done = threading.Event() if future is None else None  # a thread waits on it, a loop on the future
        self.error: BaseException | None = None
        self.future = future  # set when an event loop waits, instead of a thread


def _finish(batch: list[_Pending], error: BaseException | None) -> None:
    """Wake every waiter of a committed batch: threads directly, each event loop with one callback."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for item in batch:
        item.error = error
        if item.future is None:
            assert item.done is not None
            item.done.set()
        else:
            by_loop.setdefault(item.future.get_loop(), []).append(item.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(AuditWriteError.caused_by(error))


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        # An embedded SQLite commit is a local write, cheaper than the GIL hand-offs between an event
        # loop and a writer thread: async callers there commit on their own loop, once per loop turn.
        self.commit_on_loop = store.engine.dialect.name == "sqlite"
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def record(self, *events: AuditEvent) -> None:
        """Append events and return once they are committed (group commit with concurrent callers)."""
        pending = [_Pending(_row(e, self._now_us())) for e in events]
        self._ensure_writer()
        for item in pending:
            self._queue.put(item)
        for item in pending:
            assert item.done is not None
            item.done.wait()
            if item.error is not None:
                raise AuditWriteError.caused_by(item.error) from item.error

    async def record_async(self, *events: AuditEvent) -> None:
        """``record`` for async code: the event loop waits for the commit without holding a thread."""
        if not events:
            return
        loop = asyncio.get_running_loop()
        pending = [_Pending(_row(e, self._now_us()), loop.create_future()) for e in events]
        if self.commit_on_loop:
            batch = self._loop_batches.get(loop)
            if batch is None:  # the first event of this turn: commit after the turn's other requests
                batch = self._loop_batches[loop] = []
                loop.call_soon(self._commit_loop_batch, loop)
            batch.extend(pending)
        else:
            self._ensure_writer()
            for item in pending:
                self._queue.put(item)
        for item in pending:
            assert item.future is not None
            await item.future

    def _commit_loop_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        error: BaseException | None = None
        try:
            self.store.append_audit([p.row for p in batch], chain_hash)  # never waits on the loop: see Store
        except DatabaseBusyError:  # another session writes: the writer thread waits for it, not the loop
            self._ensure_writer()
            for item in batch:
                self._queue.put(item)
            return
        except Exception as exc:  # every waiter must learn of it
            log.error("audit write failed for %d events", len(batch), exc_info=exc)
            error = exc
        _settle([p.future for p in batch if p.future is not None], error)

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, name="chit-audit-writer", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: BaseException | None = None
            try:
                self.store.append_audit([p.row for p in batch], chain_hash)
            except DatabaseBusyError as exc:  # not a fault here: another session held the lock too long
                log.warning("audit write refused for %d events: the database stayed locked", len(batch))
                error = exc
            except Exception as exc:  # every waiter must learn of it; the loop must live on
                log.error("audit write failed for %d events", len(batch), exc_info=exc)
                error = exc
            _finish(batch, error)


@dataclass(frozen=True)
class ChainReport:
    events: int
    problems: list[str]
    head_seq: int = 0
    head_hash: str = GENESIS_HASH  # record it elsewhere: a later ``verify --anchor`` proves nothing newer was cut

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(records: Iterable[AuditRecord], anchors: Iterable[str] = ()) -> ChainReport:
    """Recompute every hash; report each event that was edited, or that follows a deleted one.

    The chain alone cannot show that its newest events were deleted: ``anchors`` are head hashes
    recorded earlier (outside the database), each of which must still be in the chain.
    """
    problems: list[str] = []
    missing = set(anchors)
    prev = GENESIS_HASH
    count = 0
    head_seq = 0
    for record in records:
        missing.discard(record.hash)
        head_seq = record.seq
        count += 1
        row = {name: getattr(record, name) for name in _CHAINED}
        if record.prev_hash != prev:
            problems.append(f"event {record.seq} ({record.id}): the event before it was deleted or altered")
        if chain_hash(record.prev_hash, row) != record.hash:
            problems.append(f"event {record.seq} ({record.id}): its content was altered")
        prev = record.hash
    problems += [f"anchor {h}: no such event; events up to it were deleted or altered" for h in sorted(missing)]
    return ChainReport(count, problems, head_seq, prev)
