"""The revocation feed inside one auth-server process (DESIGN §4, "Revocation feed").

The database is the truth: every revocation commits its event with it (``Revocations``), in id order.
``FeedHub`` carries the events on from there:

- ``published`` is called with each event this process committed: it wakes this process's streams at
  once and, with ``--redis-url``, the relay thread that publishes events on Redis (channel
  ``chit:revocations:<issuer>``: Redis pub/sub ignores database numbers, so the issuer keeps two
  installations on one Redis apart). ``RedisRelay`` follows the events table, so what other processes
  committed is published too, once whichever process relays it. A Redis failure loses nothing:
  services catch up from the feed by cursor.
- ``FeedTail`` is one reader of the events table per process, shared by every open stream: it reads
  what other processes (workers, replicas, the CLI) committed every ``feed_poll_ms``, and what this
  process committed as soon as ``published`` wakes it. A stream that resumes from further back than the
  tail holds reads those pages from the database itself.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import anyio.to_thread

from chit.errors import DatabaseBusyError
from chit.storage.records import RevocationEvent

if TYPE_CHECKING:
    from chit.storage.base import Storage

log = logging.getLogger("chit.feed")

REDIS_CHANNEL = "chit:revocations:"  # + the issuer: installations sharing a Redis never hear each other
PAGE = 1000  # the most events one read returns (and the poll endpoint's largest ``limit``)
TAIL_SIZE = 10_000  # the recent events a process keeps for its streams
REDIS_TIMEOUT = 1.0  # seconds: a Redis that does not answer delays no revocation, it is skipped
FLUSH_TIMEOUT = 2.0  # seconds a process leaving waits for its last events to reach Redis


# SET NX then PUBLISH, atomically: of every process that relays an event, exactly one publishes it
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
    return redis.call('PUBLISH', KEYS[2], ARGV[1])
end
return -1
"""
PUBLISHED_TTL = 3600  # seconds Redis remembers that an event was published


class RedisRelay:
    """Publishes the feed's events on Redis from a thread of its own: a revocation never waits for Redis.

    It follows the events table itself (every ``poll_seconds``, and at once when ``wake`` says this
    process committed one), so what any process committed reaches Redis: this server's revocations,
    the CLI's, another replica's whose Redis was briefly unreachable. Every process with ``--redis-url``
    relays; a key per event (``SET NX``) lets exactly one of them publish it. A Redis that fails keeps
    the cursor where it was: the events go out when it is back.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        store: Storage,
        *,
        after: int,
        poll_seconds: float,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        import redis  # only a process given a Redis URL needs it loaded

        self.channel = channel
        self.store = store
        self.cursor = after
        self.poll_seconds = poll_seconds
        self._client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self._publish_once = self._client.register_script(_PUBLISH_ONCE)
        self._on_failure = on_failure
        self._failed = False  # the last attempt failed: flush stops waiting, the warning is logged once
        self._woken = threading.Event()
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="chit-redis-relay", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def wake(self) -> None:
        self._woken.set()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait (at most ``timeout``) until what was committed so far was relayed (or Redis failed)."""
        target = self.store.last_revocation_event_id()
        self.wake()
        with self._idle:
            self._idle.wait_for(lambda: self.cursor >= target or self._failed, timeout)

    def _run(self) -> None:
        while True:
            self._woken.wait(self.poll_seconds)
            self._woken.clear()
            try:
                self._relay()
                self._failed = False
            except Exception as exc:  # the database or Redis: retried from the same cursor
                if not self._failed:
                    log.warning("revocation events not relayed to Redis (%s); services catch up from the feed", exc)
                    if self._on_failure is not None:
                        self._on_failure()
                self._failed = True
            with self._idle:
                self._idle.notify_all()

    def _relay(self) -> None:
        while True:
            page = self.store.revocation_events(self.cursor, limit=PAGE, now=0)
            for event in page:
                key = f"{self.channel}:published:{event.id}"
                self._publish_once(keys=[key, self.channel], args=[json.dumps(event.wire()), PUBLISHED_TTL])
                self.cursor = event.id
            if len(page) < PAGE:
                return


class FeedTail:
    """The newest events, read once per process for every stream; ``wait`` blocks until newer ones."""

    def __init__(self, store: Storage, clock: Callable[[], int], poll_seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.events: deque[RevocationEvent] = deque(maxlen=TAIL_SIZE)
        self.start = -1  # the cursor the tail begins after; -1 until the first read
        self.latest = 0
        self._changed: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        self._starting = asyncio.Lock()
        self.subscribers = 0

    async def subscribe(self) -> None:
        """One more stream reads the tail: the reader runs while any does (one reader, however many
        streams open at once: the lock keeps a second one from starting while the first starts)."""
        self.subscribers += 1
        async with self._starting:
            if self._task is None or self._task.done():
                self._loop = asyncio.get_running_loop()
                self._changed = asyncio.Condition()
                self._woken = asyncio.Event()
                if self.start < 0:
                    self.latest = await anyio.to_thread.run_sync(self.store.last_revocation_event_id)
                    self.start = self.latest
                self._task = asyncio.create_task(self._follow(), name="chit-feed-tail")

    def unsubscribe(self) -> None:
        self.subscribers -= 1
        if self.subscribers <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self.start = -1  # events may be missed while nobody reads: the next stream starts afresh
            self.events.clear()

    def wake(self) -> None:
        """Read now (this process just committed an event); safe from any thread."""
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

    async def _follow(self) -> None:
        assert self._woken is not None
        assert self._changed is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll_seconds)
            self._woken.clear()
            try:
                fresh = await anyio.to_thread.run_sync(self._read_after, self.latest)
            except DatabaseBusyError:
                continue
            except Exception:
                log.exception("reading the revocation feed failed; retrying")
                await asyncio.sleep(self.poll_seconds)
                continue
            if fresh:
                full = len(self.events) + len(fresh) > TAIL_SIZE
                self.events.extend(fresh)
                if full:  # older events fell out: a stream behind them reads the database
                    self.start = self.events[0].id - 1
                self.latest = fresh[-1].id
                async with self._changed:
                    self._changed.notify_all()

    def _read_after(self, after: int) -> list[RevocationEvent]:
        found: list[RevocationEvent] = []
        while True:
            # every event, expired or not, so that the tail stays contiguous; streams filter
            page = self.store.revocation_events(after, limit=PAGE, now=0)
            found.extend(page)
            if len(page) < PAGE:
                return found
            after = page[-1].id

    def recent(self, cursor: int) -> list[RevocationEvent] | None:
        """The tail's events after ``cursor``; None when the tail does not reach back that far."""
        if self.start < 0 or cursor < self.start:
            return None
        if self.events and self.events[-1].id <= cursor:
            return []
        return [event for event in self.events if event.id > cursor]

    async def wait(self, cursor: int, timeout: float) -> None:
        """Return when an event after ``cursor`` may be there, or after ``timeout`` seconds."""
        assert self._changed is not None
        if self.latest > cursor:
            return
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.latest > cursor), timeout)


class FeedHub:
    """This process's end of the feed: wakes its streams, publishes on Redis, counts (``chit.server.metrics``)."""

    def __init__(
        self,
        store: Storage,
        clock: Callable[[], int],
        *,
        issuer: str,
        redis_url: str | None,
        poll_ms: int,
        heartbeat: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.heartbeat = heartbeat
        self.tail = FeedTail(store, clock, poll_ms / 1000)
        self.redis_url = redis_url
        self.redis_channel = REDIS_CHANNEL + issuer
        self.poll_seconds = poll_ms / 1000
        self._redis: RedisRelay | None = None
        self._redis_lock = threading.Lock()

    def published(self, event: RevocationEvent) -> None:
        """``event`` was committed by this process: tell its streams now, and Redis."""
        from chit.server import metrics  # imported late: metrics loads prometheus_client

        metrics.revocation_published(event.kind)
        self.tail.wake()
        if self.redis_url is not None:
            self.relay(after=event.id - 1).wake()

    def relay(self, *, after: int | None = None) -> RedisRelay:
        """This process's relay to Redis, started on first need: by ``chit serve`` at start (so that what
        other processes commit reaches Redis too), or with the first event a CLI process commits."""
        assert self.redis_url is not None
        with self._redis_lock:
            if self._redis is None:
                from chit.server import metrics

                start = self.store.last_revocation_event_id() if after is None else after
                self._redis = RedisRelay(
                    self.redis_url,
                    self.redis_channel,
                    self.store,
                    after=start,
                    poll_seconds=self.poll_seconds,
                    on_failure=metrics.redis_publish_failed,
                )
            return self._redis

    def flush(self) -> None:
        """Wait briefly until what this process committed reached Redis (for a CLI process about to exit)."""
        if self._redis is not None:
            self._redis.flush()

    def page(self, after: int, limit: int) -> list[RevocationEvent]:
        """One page of the poll endpoint (events whose tokens all expired are left out)."""
        return self.store.revocation_events(after, limit=limit, now=self.clock())

    async def stream(self, after: int) -> AsyncIterator[RevocationEvent | None]:
        """Every event after ``after`` as it commits; None every ``heartbeat`` seconds of quiet (a keepalive)."""
        tail = self.tail
        await tail.subscribe()
        cursor = after
        try:
            while True:
                recent = tail.recent(cursor)
                if recent is None:  # from further back than the tail: page through the database
                    page = await anyio.to_thread.run_sync(self.page, cursor, PAGE)
                    if not page:
                        cursor = max(cursor, tail.start)
                        continue
                    recent = page
                now = self.clock()
                for event in recent:
                    cursor = event.id
                    if event.expires >= now:
                        yield event
                if recent:
                    continue
                before = tail.latest
                await tail.wait(cursor, self.heartbeat)
                if tail.latest == before:
                    yield None
        finally:
            tail.unsubscribe()
