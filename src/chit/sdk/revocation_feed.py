"""Following the auth server's revocation feed (DESIGN §4, "Revocation feed") into a ``RevocationList``.

``RevocationFeed`` keeps one service's list current, with the service's own token (its ``ServiceIdentity``
narrowed to ``chit:revocations:read``: the permission never rides on its everyday tokens):

* bootstrap: page ``GET {issuer}/oauth2/revocations?after=<cursor>&limit=<n>`` from cursor 0 until a
  page comes back short (caught up). ``start()`` waits for it (bounded), so a service bootstraps before
  it takes traffic; ``ready()`` waits for it too;
* then follow, by default the stream ``GET {issuer}/oauth2/revocations/stream``: server-sent events
  resumed with ``Last-Event-ID: <cursor>``, reconnected with backoff after any error, every reconnect
  resuming from the cursor. A quiet stream sends a keepalive comment every few seconds: one that sends
  nothing for ``quiet_timeout`` is taken for dead and reconnected;
* or, with ``redis_url``, Redis pub/sub for low latency (channel ``chit:revocations:<issuer>``, where
  ``chit serve --redis-url`` publishes: pub/sub ignores database numbers, so the issuer keeps
  installations apart), with the feed endpoint as the source: polled from the cursor after every
  (re)connection to Redis, at once when a message announces an event past the cursor, and every
  ``poll_interval`` seconds anyway. A Redis message is only a wake-up, never applied as it stands:
  Redis authenticates no publisher, so whoever may publish on it could otherwise revoke a signing key
  in every service. What is applied comes from the feed, read with the service's own token, in the
  server's order; an event lost on Redis is found by the next poll: nothing is missed silently.

Staleness is how long ago the feed last confirmed that the list is current: a poll answered, a stream
event or keepalive received (Redis messages do not count: only a poll shows that none was lost);
infinite before the first confirmation. The verifier refuses what its policy names past its
``max_staleness``. The endpoints come from the issuer's metadata (``revocation_feed_endpoint``,
``revocation_stream_endpoint``), or the default paths when it names none.

The follower is one background task per feed. No exception ends it: every failure is logged (logger
``chit.sdk``) and retried with backoff, up to ``max_reconnect_delay``; ``aclose`` stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx

from chit.core.paths import AUTHORIZATION_SERVER_METADATA_PATH, REVOCATION_FEED_PATH, REVOCATION_STREAM_PATH
from chit.errors import FetchError, TokenRequestError
from chit.revocation.base import REVOCATION_KINDS, RevocationEvent
from chit.revocation.list import RevocationList
from chit.sdk.fetch import FETCH_TIMEOUT, is_secure_url
from chit.sdk.identity import ServiceIdentity
from chit.sdk.settings import explain

log = logging.getLogger("chit.sdk")

REVOCATIONS_READ = "chit:revocations:read"
REDIS_CHANNEL = "chit:revocations:"  # + the issuer
PAGE_SIZE = 500  # events per poll (the server allows 1000): a page stays well under MAX_PAGE_SIZE
POLL_INTERVAL = 10.0  # seconds between catch-up polls with Redis
QUIET_TIMEOUT = 20.0  # seconds of silence before a stream (keepalive every 5 s) or Redis is taken for dead
MAX_STALENESS = 30.0  # seconds without a confirmation after which the list counts as stale
BOOTSTRAP_TIMEOUT = 10.0  # seconds ``start`` waits for the first pages before it gives up (and stays stale)
FIRST_RECONNECT_DELAY = 0.25
MAX_RECONNECT_DELAY = 15.0
MIN_WAKE_GAP = 0.05  # seconds after a poll that found nothing new before the next: a flood is 20 polls a second
MIN_STREAM_LIFE = 1.0  # seconds: a stream the server ends sooner is a failure, reconnected with backoff
MAX_PAGE_SIZE = 4 * 1024 * 1024  # bytes of one poll answer
MAX_EVENT_SIZE = 64 * 1024  # bytes of one event's data, on the stream or on Redis
STREAM_EVENT = "revocation"


class FeedError(Exception):
    """The feed answered something unusable (a status, a body); the follower logs it and retries."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched server-sent event (``comment`` True for a comment line such as ``: keepalive``)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: bool = False


async def server_sent_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """The events of a ``text/event-stream`` (WHATWG HTML §9.2.6), given its lines; comments as they come."""
    event, event_id, size = "", None, 0
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), event_id)
            event, data, size = "", [], 0
            continue
        if line.startswith(":"):
            yield ServerSentEvent(data=line[1:].strip(), comment=True)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            size += len(value)
            if size > MAX_EVENT_SIZE:
                raise FeedError(f"a stream event is larger than {MAX_EVENT_SIZE} bytes")
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            event_id = value


class RevocationFeed:
    """Keeps ``revocations`` (a ``RevocationList``, by default a new one) current from ``issuer``'s feed.

    ``identity`` is the service's own (narrowed here to ``chit:revocations:read``); ``redis_url`` follows
    Redis (``redis_channel``, by default the issuer's) instead of the stream; ``feed_url`` and
    ``stream_url`` skip discovery; ``http_client`` is used for every request when given (else the feed
    opens its own, closed when it stops); ``monotonic`` is the clock staleness is measured with.
    ``stale`` says, without reading the clock, whether ``staleness()`` is past ``max_staleness``, which
    must stay well above the server's keepalive interval (5 s by default) and ``poll_interval``.
    """

    def __init__(
        self,
        issuer: str,
        identity: ServiceIdentity,
        revocations: RevocationList | None = None,
        *,
        redis_url: str | None = None,
        redis_channel: str | None = None,
        feed_url: str | None = None,
        stream_url: str | None = None,
        max_staleness: float = MAX_STALENESS,
        poll_interval: float = POLL_INTERVAL,
        page_size: int = PAGE_SIZE,
        quiet_timeout: float = QUIET_TIMEOUT,
        max_reconnect_delay: float = MAX_RECONNECT_DELAY,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        for url in (issuer, feed_url, stream_url):
            if url is not None and not is_secure_url(url):
                # a feed read in clear text can be emptied on the way, and revoked tokens accepted
                raise ValueError(f"{url!r} must be https (plain http only on loopback hosts)")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size is between 1 and 1000")
        self.issuer = issuer
        self.identity = identity if identity.scope == (REVOCATIONS_READ,) else identity.narrowed((REVOCATIONS_READ,))
        self.revocations = revocations if revocations is not None else RevocationList()
        self.redis_url = redis_url
        self.redis_channel = redis_channel or REDIS_CHANNEL + issuer
        self.feed_url = feed_url
        self.stream_url = stream_url
        self.max_staleness = max_staleness
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.quiet_timeout = quiet_timeout
        self.max_reconnect_delay = max_reconnect_delay
        self.timeout = timeout
        self.monotonic = monotonic
        self._http_client = http_client
        self._discovered = feed_url is not None and stream_url is not None
        self.cursor = 0  # the last event id read from the feed in the server's order
        self.confirmed_at: float | None = None  # monotonic time the list was last confirmed current
        # staleness() > max_staleness, kept by a timer so that a request reads a flag, not the clock
        self.stale = True
        self._stale_timer: asyncio.TimerHandle | None = None
        self.bootstrapped = False
        self.last_error: str | None = None
        self.last_failure: BaseException | None = None  # the error last_error describes
        self.polls = 0  # poll requests answered, for tests and metrics
        self.connections = 0  # streams or Redis subscriptions opened
        self.next_attempt_at: float | None = None  # when the follower tries again after a failure
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._catch_up: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"RevocationFeed(issuer={self.issuer!r}, cursor={self.cursor}, size={self.revocations.size})"

    # --- what the verifier reads ---------------------------------------------------------------------

    def staleness(self) -> float:
        """Seconds since the feed last confirmed the list current; infinite before the first time."""
        confirmed = self.confirmed_at
        return math.inf if confirmed is None else max(0.0, self.monotonic() - confirmed)

    def retry_after(self) -> int:
        """Whole seconds a caller refused for staleness might wait: until the follower's next attempt."""
        attempt = self.next_attempt_at
        wait = 1.0 if attempt is None else attempt - self.monotonic() + 1
        return max(1, min(math.ceil(wait), math.ceil(self.max_reconnect_delay) + 1))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- start and stop -----------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the follower in the background on this event loop, unless it runs already."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        self._ready = asyncio.Event()
        if self.bootstrapped:
            self._ready.set()
        self._catch_up = asyncio.Event()
        self._stop_stale_timer()  # a timer of an earlier loop never fires here
        self.stale = self.staleness() > self.max_staleness
        if not self.stale:
            self._arm_stale_timer()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"chit-revocation-feed {self.issuer}")

    async def start(self, timeout: float | None = BOOTSTRAP_TIMEOUT) -> bool:
        """Start following (once: later calls join) and wait up to ``timeout`` seconds (None: as long as it
        takes) for the bootstrap; True once it is done. False leaves the follower trying in the background:
        the list is stale until it succeeds."""
        self.begin()
        return await self.ready(timeout)

    async def ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the bootstrap (after ``start`` or ``begin``); whether it is done."""
        if self.bootstrapped:
            return True
        ready = self._ready
        if ready is None:
            raise RuntimeError("the feed is not started: call start() first")
        with suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), timeout)
        return self.bootstrapped

    async def aclose(self) -> None:
        """Stop following; the list keeps what it holds and is stale from now on. ``start`` follows again."""
        self._stop_stale_timer()
        self.stale = True  # nothing confirms it any more
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> RevocationFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the follower -------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Bootstrap, then follow; whatever escapes a step is logged and the step starts over."""
        client = self._http_client or httpx.AsyncClient(timeout=self.timeout)
        try:
            while True:
                try:
                    if not self.bootstrapped:
                        await self._retrying(lambda: self._poll(client), "bootstrap the revocation list")
                        self.bootstrapped = True
                        assert self._ready is not None
                        self._ready.set()
                        log.info("revocation list bootstrapped from %s: %d entries", self.issuer, self.revocations.size)
                    if self.redis_url is not None:
                        await self._follow_redis(client, self.redis_url)
                    else:
                        await self._follow_stream(client)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the revocation feed of %s failed unexpectedly; starting over", self.issuer)
                    await asyncio.sleep(self.max_reconnect_delay)
        finally:
            if self._http_client is None:
                await client.aclose()

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], what: str) -> None:
        """Await ``attempt()`` until it succeeds, with backoff between failures."""
        delay = FIRST_RECONNECT_DELAY
        while True:
            try:
                await attempt()
                self._recovered(what)
                return
            except (httpx.HTTPError, FetchError, FeedError, TokenRequestError, ValueError) as exc:
                self._failed(what, exc, delay)
            await asyncio.sleep(self._jittered(delay))
            delay = min(delay * 2, self.max_reconnect_delay)

    def _failed(self, what: str, error: BaseException, delay: float) -> None:
        explained = explain(error, self.issuer, self.identity.client_id)
        level = logging.WARNING if self.last_error is None else logging.INFO  # once per outage, not per retry
        if explained is not None:
            log.log(level, "%s (could not %s; retrying)", explained, what)
        else:
            log.log(level, "could not %s (%s: %s); retrying", what, type(error).__name__, error)
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_failure = error
        self.next_attempt_at = self.monotonic() + delay

    def _recovered(self, what: str) -> None:
        if self.last_error is not None:
            log.warning("could %s again (after %s)", what, self.last_error)
        self.last_error = None
        self.last_failure = None
        self.next_attempt_at = None

    def _jittered(self, delay: float) -> float:
        return delay * (0.8 + 0.4 * random.random())  # noqa: S311 (spreads reconnections; no secret)

    def _confirmed(self, at: float) -> None:
        """The list is current as of ``at``: what staleness counts from."""
        if self.confirmed_at is None or at > self.confirmed_at:
            self.confirmed_at = at
        if self.staleness() <= self.max_staleness:
            self.stale = False
            if self._stale_timer is None:
                self._arm_stale_timer()
        self.revocations.prune()

    def _arm_stale_timer(self) -> None:
        """Flip ``stale`` when ``max_staleness`` has passed since the last confirmation; one timer at a time,
        re-armed when it fires early (confirmations came meanwhile), so a confirmation costs no timer."""
        remaining = self.max_staleness - self.staleness()
        if remaining < 0:
            self._stale_timer = None
            self.stale = True
            return
        self._stale_timer = asyncio.get_running_loop().call_later(remaining + 0.001, self._arm_stale_timer)

    def _stop_stale_timer(self) -> None:
        timer, self._stale_timer = self._stale_timer, None
        if timer is not None:
            timer.cancel()

    # --- polling ------------------------------------------------------------------------------------

    async def _poll(self, client: httpx.AsyncClient) -> None:
        """Page the feed from the cursor until a page comes back short: then the list is current as of
        the last page's request."""
        feed_url, _ = await self._endpoints(client)
        while True:
            asked_at = self.monotonic()
            events, cursor = await self._page(client, feed_url, self.cursor)
            for event in events:
                self._apply(event)
            self.cursor = max(self.cursor, cursor)
            self.polls += 1
            if len(events) < self.page_size:
                self._confirmed(asked_at)
                return

    async def _page(self, client: httpx.AsyncClient, feed_url: str, after: int) -> tuple[list[RevocationEvent], int]:
        params = {"after": str(after), "limit": str(self.page_size)}
        headers = {"Accept": "application/json"}
        page = client.stream(
            "GET", feed_url, params=params, headers=headers, auth=self.identity, follow_redirects=False
        )
        async with page as response:
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_PAGE_SIZE:
                    raise FeedError(f"{feed_url} answered more than {MAX_PAGE_SIZE} bytes")
        if response.status_code != 200:
            raise FeedError(f"{feed_url} answered {response.status_code}{_forbidden_hint(response.status_code)}")
        try:
            body = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise FeedError(f"{feed_url} did not answer JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise FeedError(f"{feed_url} answered no events list")
        cursor = body.get("cursor")
        if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < after:
            raise FeedError(f"{feed_url} answered a cursor {cursor!r} before {after}")
        events = [event for event in map(_event, body["events"]) if event is not None]
        return events, cursor

    def _apply(self, event: RevocationEvent) -> None:
        self.revocations.apply(event)

    # --- the stream ---------------------------------------------------------------------------------

    async def _follow_stream(self, client: httpx.AsyncClient) -> None:
        """Follow the stream for good: reconnect with backoff, resuming from the cursor each time."""
        delay = FIRST_RECONNECT_DELAY
        while True:
            opened, began = self.connections, self.monotonic()
            try:
                await self._stream(client)
            except (httpx.HTTPError, FetchError, FeedError, TokenRequestError, ValueError) as exc:
                if self.connections != opened:
                    delay = FIRST_RECONNECT_DELAY  # it was open: this failure starts the backoff afresh
                self._failed("follow the revocation stream", exc, delay)
            else:
                if self.monotonic() - began >= MIN_STREAM_LIFE:
                    # the server ends a stream when the token it was opened with expires: resume at once
                    log.debug("the revocation stream of %s ended; resuming from %d", self.issuer, self.cursor)
                    delay = FIRST_RECONNECT_DELAY
                    await asyncio.sleep(self._jittered(delay))
                    continue
                self._failed("follow the revocation stream", FeedError("the stream ended at once"), delay)
            await asyncio.sleep(self._jittered(delay))
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _stream(self, client: httpx.AsyncClient) -> None:
        """Read the stream until it ends, fails or stays quiet for ``quiet_timeout``."""
        _, stream_url = await self._endpoints(client)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Last-Event-ID": str(self.cursor)}
        timeout = httpx.Timeout(self.timeout, read=self.quiet_timeout)
        stream = client.stream(
            "GET", stream_url, headers=headers, auth=self.identity, timeout=timeout, follow_redirects=False
        )
        async with stream as response:
            if response.status_code != 200:
                raise FeedError(f"{stream_url} answered {response.status_code}{_forbidden_hint(response.status_code)}")
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise FeedError(f"{stream_url} did not answer an event stream")
            self.connections += 1
            self._recovered("follow the revocation stream")
            async for message in server_sent_events(response.aiter_lines()):
                received_at = self.monotonic()
                if not message.comment and message.event == STREAM_EVENT:
                    self._streamed(message)
                self._confirmed(received_at)

    def _streamed(self, message: ServerSentEvent) -> None:
        try:
            data = json.loads(message.data)
        except (ValueError, RecursionError) as exc:
            raise FeedError("a stream event is not JSON") from exc
        event = _event(data)
        if event is None:
            # an event of a kind this SDK does not know: past it all the same
            self.cursor = max(self.cursor, data["id"])
            return
        if event.id <= self.cursor:
            return  # replayed after a reconnection
        self._apply(event)
        self.cursor = event.id  # the stream is the feed, in the server's order

    # --- Redis --------------------------------------------------------------------------------------

    async def _follow_redis(self, client: httpx.AsyncClient, redis_url: str) -> None:
        """Follow Redis for good (reconnecting with backoff) while polls catch up beside it."""
        from redis.exceptions import RedisError  # loaded by the services that follow Redis only

        poller = asyncio.get_running_loop().create_task(self._poll_periodically(client), name="chit-revocation-poll")
        try:
            delay = FIRST_RECONNECT_DELAY
            while True:
                opened = self.connections
                try:
                    await self._subscribe(redis_url)
                    raise FeedError("the Redis subscription ended")
                except (RedisError, OSError, FeedError, ValueError) as exc:
                    if self.connections != opened:
                        delay = FIRST_RECONNECT_DELAY
                    self._failed("follow revocations on Redis", exc, delay)
                await asyncio.sleep(self._jittered(delay))
                delay = min(delay * 2, self.max_reconnect_delay)
        finally:
            poller.cancel()
            with suppress(asyncio.CancelledError):
                await poller

    async def _subscribe(self, redis_url: str) -> None:
        """Listen on the channel until the connection fails or stays quiet for ``quiet_timeout``."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        connection = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=self.timeout, socket_timeout=self.quiet_timeout
        )
        pubsub = connection.pubsub()
        try:
            await pubsub.subscribe(self.redis_channel)
            heard_at = self.monotonic()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=self.quiet_timeout / 4)
                now = self.monotonic()
                if message is None:
                    if now - heard_at > self.quiet_timeout:
                        raise FeedError(f"Redis said nothing for {self.quiet_timeout:.0f} s")
                    if not pinged and now - heard_at > self.quiet_timeout / 2:
                        await pubsub.ping()  # its pong, or the failure to send it, tells whether Redis is there
                        pinged = True
                    continue
                heard_at, pinged = now, False
                kind = message.get("type")
                if kind == "subscribe":
                    self.connections += 1
                    self._recovered("follow revocations on Redis")
                    self._request_catch_up()  # subscribed first, then caught up: nothing falls in between
                elif kind == "message":
                    self._published(message.get("data"))
        finally:
            with suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with suppress(RedisError, OSError):
                await connection.aclose()

    def _published(self, data: object) -> None:
        """A message on Redis: an event past the cursor sends the poller to read the feed at once. The event
        itself is not applied: anyone who may publish on that Redis could have sent it."""
        if not isinstance(data, bytes | str) or len(data) > MAX_EVENT_SIZE:
            log.warning("skipped a Redis message that is not a revocation event")
            return
        try:
            event = _event(json.loads(data))
        except (ValueError, RecursionError, FeedError) as exc:
            log.warning("skipped a Redis message that is not a revocation event (%s)", exc)
            return
        if event is not None and event.id > self.cursor:
            self._request_catch_up()

    def _request_catch_up(self) -> None:
        if self._catch_up is not None:
            self._catch_up.set()

    async def _poll_periodically(self, client: httpx.AsyncClient) -> None:
        """Poll every ``poll_interval`` seconds, and at once when asked to catch up; after a failure,
        again with backoff (never later than ``poll_interval``)."""
        assert self._catch_up is not None
        catch_up = self._catch_up
        delay = FIRST_RECONNECT_DELAY
        wait = 0.0
        polled_at = -math.inf
        fruitless = False  # the last poll found nothing past the cursor
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(catch_up.wait(), wait)
            # whoever may publish on Redis may send messages without end: after a poll that a message asked for
            # in vain, the next keeps a gap; a poll that brought events is followed at once
            gap = MIN_WAKE_GAP - (self.monotonic() - polled_at)
            if fruitless and gap > 0:
                await asyncio.sleep(gap)
            catch_up.clear()
            polled_at, cursor, fruitless = self.monotonic(), self.cursor, True
            try:
                await self._poll(client)
            except (httpx.HTTPError, FetchError, FeedError, TokenRequestError, ValueError) as exc:
                self._failed("poll the revocation feed", exc, delay)
                wait = min(self._jittered(delay), self.poll_interval)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling the revocation feed of %s failed unexpectedly", self.issuer)
                wait = self.poll_interval
                continue
            self._recovered("poll the revocation feed")
            fruitless = self.cursor == cursor
            delay = FIRST_RECONNECT_DELAY
            wait = self.poll_interval

    # --- discovery ----------------------------------------------------------------------------------

    async def _endpoints(self, client: httpx.AsyncClient) -> tuple[str, str]:
        """The feed and stream URLs: as given, else from the issuer's metadata, else the default paths."""
        base = self.issuer.rstrip("/")
        if not self._discovered:
            try:
                document = await self._metadata(client, base + AUTHORIZATION_SERVER_METADATA_PATH)
            except (httpx.HTTPError, FeedError) as exc:
                log.info("no metadata from %s (%s); using the default revocation feed paths", self.issuer, exc)
            else:
                self._discovered = True
                self.feed_url = self.feed_url or _named(document, "revocation_feed_endpoint")
                self.stream_url = self.stream_url or _named(document, "revocation_stream_endpoint")
        return self.feed_url or base + REVOCATION_FEED_PATH, self.stream_url or base + REVOCATION_STREAM_PATH

    async def _metadata(self, client: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
        response = await client.get(
            url, headers={"Accept": "application/json"}, timeout=self.timeout, follow_redirects=False
        )
        if response.status_code != 200 or len(response.content) > MAX_PAGE_SIZE:
            raise FeedError(f"{url} answered {response.status_code}")
        try:
            document = response.json()
        except ValueError as exc:
            raise FeedError(f"{url} did not answer JSON") from exc
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FeedError(f"{url} is not {self.issuer}'s metadata")
        return document


def _named(document: Mapping[str, Any], name: str) -> str | None:
    url = document.get(name)
    if url is None:
        return None
    if not isinstance(url, str) or not is_secure_url(url):
        raise FeedError(f"{name} {str(url)[:200]!r} is not https")
    return url


def _event(data: object) -> RevocationEvent | None:
    """The event of a JSON object; None for a well-formed event of a kind this SDK does not know."""
    if not isinstance(data, dict):
        raise FeedError("a revocation event is not a JSON object")
    event_id = data.get("id")
    if data.get("kind") not in REVOCATION_KINDS and isinstance(event_id, int) and not isinstance(event_id, bool):
        log.warning("revocation event %s has a kind this SDK does not know: %r", event_id, data.get("kind"))
        return None
    try:
        return RevocationEvent.from_dict(data)
    except ValueError as exc:
        raise FeedError(str(exc)) from exc


def _forbidden_hint(status: int) -> str:
    if status == 403:
        return f" (the service's client must hold {REVOCATIONS_READ})"
    return ""
