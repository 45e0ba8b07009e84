"""What the SDK fetches from the issuer, and how: one request in flight, the last good value kept.

``HttpGetter`` sends the SDK's few requests (discovery, JWKS, token) with a size cap on the answer,
on the caller's httpx client or on one made for that request alone and closed with it: a client is
bound to the event loop it first ran on, and these requests are rare. The caller's client is never
closed here. ``discover`` reads one endpoint from the issuer's discovery document, which must be
the configured issuer's and name an https (or loopback) URL.

``SingleFlight`` holds the latest good value of something fetched (the signing keys, the service's
token) and the rules both share (DESIGN §4, SDK contract):

* concurrent callers share one fetch: a second caller joins the one under way;
* a failed fetch never replaces the value in hand; it is logged and kept as ``error``, and the value
  keeps serving (until its own ``expires_at``) for ``retry_pause`` before the next use tries again;
* nothing needs starting; ``aclose`` cancels a fetch under way, and the value stays usable.

When to fetch (cool-downs, renewal ahead of expiry, a refused token) is each user's own rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from chit.core.paths import OPENID_CONFIGURATION_PATH
from chit.errors import FetchError

log = logging.getLogger("chit.sdk")

FETCH_TIMEOUT = 5.0
REFUSED_RENEW_PAUSE = 5.0  # seconds: a token seen refused is renewed at most this often
MAX_DOCUMENT_SIZE = 512 * 1024
ACCEPT_JSON = {"Accept": "application/json"}

T = TypeVar("T")


def is_secure_url(url: str) -> bool:
    """https, or plain http to a loopback host (development and tests), as the server's issuer rule."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer read in full (at most ``MAX_DOCUMENT_SIZE`` bytes)."""

    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except (ValueError, RecursionError) as exc:
            raise FetchError(f"{self.url} did not answer JSON") from exc

    def document(self) -> Any:
        """The JSON document of a 200 answer; ``FetchError`` for anything else."""
        if self.status_code != 200:
            raise FetchError(f"{self.url} answered {self.status_code}")
        return self.json()


class _Body:
    def __init__(self, url: str) -> None:
        self.url = url
        self.content = bytearray()

    def add(self, chunk: bytes) -> None:
        self.content += chunk
        if len(self.content) > MAX_DOCUMENT_SIZE:
            raise FetchError(f"{self.url} answered more than {MAX_DOCUMENT_SIZE} bytes")

    def reply(self, response: httpx.Response) -> Reply:
        return Reply(self.url, response.status_code, response.headers, bytes(self.content))


def endpoint_in(document: object, issuer: str, name: str) -> str:
    """The URL ``name`` of ``issuer``'s discovery document (RFC 8414 §3.2)."""
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise FetchError(f"discovery document is not {issuer}'s")
    url = document.get(name)
    if not isinstance(url, str):
        raise FetchError(f"discovery document has no {name}")
    if not is_secure_url(url):
        raise FetchError(f"{name} {url[:200]!r} is not https")
    return url


class HttpGetter:
    """Sends a request and reads its answer with a size cap, on the caller's client or a short-lived one."""

    def __init__(
        self,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = FETCH_TIMEOUT,
        *,
        sync_http_client: httpx.Client | None = None,
    ) -> None:
        self.http_client = http_client
        self.sync_http_client = sync_http_client
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None

    def _verify(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self.http_client is not None:
            yield self.http_client
            return
        async with httpx.AsyncClient(timeout=self.timeout, verify=self._verify()) as client:
            yield client

    @contextmanager
    def _sync_client(self) -> Iterator[httpx.Client]:
        if self.sync_http_client is not None:
            yield self.sync_http_client
            return
        with httpx.Client(timeout=self.timeout, verify=self._verify()) as client:
            yield client

    async def send(
        self, method: str, url: str, *, headers: Mapping[str, str] = ACCEPT_JSON, content: bytes | None = None
    ) -> Reply:
        body = _Body(url)
        async with self._client() as client:
            request = client.build_request(method, url, headers=headers, content=content, timeout=self.timeout)
            # never followed, whatever the caller's client does: a redirect would take keys, or post a secret,
            # from or to where the https and issuer checks never looked
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                async for chunk in response.aiter_bytes():
                    body.add(chunk)
            finally:
                await response.aclose()
        return body.reply(response)

    def send_sync(
        self, method: str, url: str, *, headers: Mapping[str, str] = ACCEPT_JSON, content: bytes | None = None
    ) -> Reply:
        body = _Body(url)
        with self._sync_client() as client:
            request = client.build_request(method, url, headers=headers, content=content, timeout=self.timeout)
            response = client.send(request, stream=True, follow_redirects=False)  # as ``send``
            try:
                for chunk in response.iter_bytes():
                    body.add(chunk)
            finally:
                response.close()
        return body.reply(response)

    async def discover(self, issuer: str, name: str) -> str:
        """The endpoint ``name`` (``jwks_uri``, ``token_endpoint``) from ``issuer``'s discovery."""
        reply = await self.send("GET", issuer.rstrip("/") + OPENID_CONFIGURATION_PATH)
        return endpoint_in(reply.document(), issuer, name)

    def discover_sync(self, issuer: str, name: str) -> str:
        reply = self.send_sync("GET", issuer.rstrip("/") + OPENID_CONFIGURATION_PATH)
        return endpoint_in(reply.document(), issuer, name)


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """A fetched value: fresh until ``renew_at`` (later after a failed renewal), served as the last
    good one until ``expires_at``."""

    value: T
    renew_at: float
    expires_at: float = math.inf


class SingleFlight(Generic[T]):
    """The latest good value of ``what``, fetched by ``fetch`` (``fetch_sync`` for threads) once for
    all concurrent callers; a fetch that raises one of ``errors`` keeps the value in hand."""

    def __init__(
        self,
        what: str,
        fetch: Callable[[], Awaitable[Fetched[T]]],
        *,
        fetch_sync: Callable[[], Fetched[T]] | None = None,
        errors: tuple[type[Exception], ...],
        retry_pause: float,
        clock: Callable[[], float],
    ) -> None:
        self.what = what
        self._fetch = fetch
        self._fetch_sync = fetch_sync
        self.errors = errors
        self.retry_pause = retry_pause
        self.clock = clock
        self._fetched: Fetched[T] | None = None
        # before it, the value in hand needs no fetch (nor may have one, after a failure); read per request
        self.renew_at = -math.inf
        self.error: Exception | None = None  # of the last attempt, None once one succeeded
        self.attempts = 0  # for tests and metrics
        self.last_attempt: float | None = None
        self._renewed_for_refusal = -math.inf  # when a value whose token was refused was last renewed
        self._task: asyncio.Task[bool] | None = None
        self._lock = threading.Lock()

    @property
    def value(self) -> T | None:
        """The last good value, however old."""
        return None if self._fetched is None else self._fetched.value

    def usable(self, now: float) -> T | None:
        """The last good value until it expires."""
        fetched = self._fetched
        return fetched.value if fetched is not None and now < fetched.expires_at else None

    def held_back(self, refused: str | None, now: float, token: Callable[[T], str]) -> T | None:
        """The value whose ``token`` a called service ``refused``, kept while one was renewed for a refusal less
        than ``REFUSED_RENEW_PAUSE`` ago (a service refusing every token must not make each call a fetch);
        None when it is to be renewed, the first time at once."""
        current = self.usable(now)
        if refused is None or current is None or token(current) != refused:
            return None
        if now - self._renewed_for_refusal < REFUSED_RENEW_PAUSE:
            return current
        self._renewed_for_refusal = now
        return None

    def waited(self, seconds: float, now: float) -> bool:
        """At least ``seconds`` since the last attempt began (or none yet)."""
        return self.last_attempt is None or now - self.last_attempt >= seconds

    def running(self) -> asyncio.Task[bool] | None:
        """The fetch under way on this event loop, if any."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def start(self) -> asyncio.Task[bool]:
        """Start a fetch in the background; its result is True when it installed a new value."""
        self._began()
        task = asyncio.get_running_loop().create_task(self._run(), name=f"chit-fetch {self.what}")
        self._task = task
        return task

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch under way; True when a new value was installed."""
        task = self.running() or self.start()
        return await asyncio.shield(task)

    async def obtain(self) -> T:
        """The outcome of a fetch (or of the one under way): the new value, or the last good one while
        it has not expired, or the fetch's error."""
        return self._outcome(await self.refresh())

    def obtain_sync(self, pick: Callable[[], T | None]) -> T:
        """``obtain`` for threads: one fetches; the others wait for it, then take ``pick()`` if it
        now has a value."""
        assert self._fetch_sync is not None
        with self._lock:
            value = pick()
            if value is not None:
                return value
            self._began()
            try:
                fetched = self._fetch_sync()
            except self.errors as exc:
                self._failed(exc)
                return self._outcome(False)
            self._install(fetched)
            return fetched.value

    async def aclose(self) -> None:
        """Cancel the fetch under way on this loop, if any; a later use fetches again."""
        task = self._task
        self._task = None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def _began(self) -> None:
        self.last_attempt = self.clock()
        self.attempts += 1

    async def _run(self) -> bool:
        try:
            fetched = await self._fetch()
        except self.errors as exc:
            self._failed(exc)
            return False
        self._install(fetched)
        return True

    def _install(self, fetched: Fetched[T]) -> None:
        self._fetched = fetched
        self.renew_at = fetched.renew_at
        self.error = None

    def _failed(self, error: Exception) -> None:
        level = logging.WARNING if self.error is None else logging.INFO  # once per outage, not per retry
        self.error = error
        fetched = self._fetched
        if fetched is not None:
            self.renew_at = max(self.renew_at, self.clock() + self.retry_pause)
        kept = "keeping the last good one" if fetched is not None else "none in hand"
        log.log(level, "could not fetch %s (%s: %s); %s", self.what, type(error).__name__, error, kept)

    def _outcome(self, installed: bool) -> T:
        fetched = self._fetched
        if fetched is not None and (installed or self.clock() < fetched.expires_at):
            return fetched.value
        assert self.error is not None
        raise self.error
