"""The auth server's Prometheus metrics, and ``GET /metrics`` that exposes them.

- ``chit_tokens_issued_total{grant}``, ``chit_tokens_refused_total{grant, error}``: the token endpoint's
  answers; ``grant`` is the ``grant_type`` sent when it is one chit knows, else ``other``, and ``error``
  the RFC 6749 §5.2 code. The endpoint bounds the labels, so that no client can grow the series.
- ``chit_revocations_published_total{kind}``: revocations that left for the services, by feed kind;
  ``chit_redis_publish_failures_total``: events that ``--redis-url`` could not publish on Redis (the
  services catch up by the feed's cursor, but later).
- ``chit_feed_subscribers``: revocation streams open now; ``chit_feed_lag_seconds``: from an event's
  creation to its delivery on a stream (DESIGN §1: revocation reaches every service within a second).
- ``chit_http_request_duration_seconds{method, route}``: from a request's arrival to the start of its
  response, by the matched route's path template (``/admin/sessions/{session_id}``, never the raw
  path: ids would make a series each); ``unmatched`` for a request that matched no route. The start of the
  response, not its end: a revocation stream stays open for hours and would swamp every bucket.

``/metrics`` is served on the server's own port, with no authentication, as most Prometheus exporters
are: the numbers tell how busy the server is and how often it refuses, never who asked or for what (no
client, user or token is ever a label). A deployment that must hide them blocks ``/metrics`` at its
proxy.

Several worker processes (``chit serve --workers N``) share nothing in memory, so each would tell
its own numbers. Then ``chit serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
any worker starts; prometheus_client, imported by a worker after that, keeps every value in a file
there, and ``/metrics`` merges the files of all workers, whichever of them answers. Counters and
histograms of a worker that died stay in the totals; the gauge counts only live workers' streams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chit.revocation.base import RevocationKind

METRICS_PATH = "/metrics"
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name; read when it is imported
OTHER = "other"  # the label of any value outside a bounded set
UNMATCHED = "unmatched"  # the route of a request that matched none
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REVOCATION_KINDS = frozenset(get_args(RevocationKind))

TOKENS_ISSUED = Counter("chit_tokens_issued", "Tokens the token endpoint issued, by grant type.", ["grant"])
TOKENS_REFUSED = Counter(
    "chit_tokens_refused",
    "Token requests the token endpoint refused, by grant type and RFC 6749 error code.",
    ["grant", "error"],
)
REVOCATIONS_PUBLISHED = Counter(
    "chit_revocations_published", "Revocations published to the services, by feed event kind.", ["kind"]
)
REDIS_PUBLISH_FAILURES = Counter(
    "chit_redis_publish_failures", "Revocation events that could not be published on Redis."
)
FEED_SUBSCRIBERS = Gauge(
    "chit_feed_subscribers", "Revocation streams open now.", multiprocess_mode="livesum"
)  # the sum over the workers alive: a dead worker's streams are closed
FEED_LAG = Histogram(
    "chit_feed_lag_seconds",
    "Time from a revocation event's creation to its delivery on a stream.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
REQUEST_DURATION = Histogram(
    "chit_http_request_duration_seconds",
    "Time from a request's arrival to the start of its response, by method and route template.",
    ["method", "route"],
    # from a cached JWKS (well under a millisecond) to a password login (Argon2, tens of milliseconds)
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


# what the endpoints call ---------------------------------------------------------------------------


def grants_known(grants: Iterable[str]) -> None:
    """Show every grant the server knows at 0 from the start: a series that appears only at its first
    token makes ``rate()`` miss that token."""
    for grant in grants:
        TOKENS_ISSUED.labels(grant=grant)


def token_issued(grant: str) -> None:
    """A token issued; ``grant`` is a known grant type or ``other`` (the caller bounds it)."""
    TOKENS_ISSUED.labels(grant=grant).inc()


def token_refused(grant: str, error: str) -> None:
    """A token request refused with the RFC code ``error``; ``grant`` as for ``token_issued``."""
    TOKENS_REFUSED.labels(grant=grant, error=error).inc()


def revocation_published(kind: str) -> None:
    """A revocation published to the services; ``kind`` is the feed event's (DESIGN §4)."""
    REVOCATIONS_PUBLISHED.labels(kind=kind if kind in REVOCATION_KINDS else OTHER).inc()


def redis_publish_failed() -> None:
    """An event that did not reach Redis: the services following Redis learn it late, by cursor."""
    REDIS_PUBLISH_FAILURES.inc()


def feed_subscriber_opened() -> None:
    """A revocation stream opened; every call is paired with one ``feed_subscriber_closed``."""
    FEED_SUBSCRIBERS.inc()


def feed_subscriber_closed() -> None:
    FEED_SUBSCRIBERS.dec()


def feed_event_delivered(created_at: float) -> None:
    """An event sent on a stream; ``created_at`` is when it was created (epoch seconds, ``time.time()``).

    Wall clocks, since the event may come from another process or replica; a clock a little behind
    counts as no lag rather than a negative one.
    """
    FEED_LAG.observe(max(0.0, time.time() - created_at))


# the request-duration middleware --------------------------------------------------------------------


class RequestDurationMiddleware:
    """Times each HTTP request for ``chit_http_request_duration_seconds``, as a pure ASGI middleware.

    The route is read once the app answers: by then the router has left the matched route in the scope. Each
    (method, route) pair's histogram child is looked up once and kept, so that a request costs two
    clock reads and one observation.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._observers: dict[tuple[str, str], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        timed = False

        async def send_and_time(message: Message) -> None:
            nonlocal timed
            if not timed and message["type"] == "http.response.start":
                timed = True
                self._observe(scope, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_time)
        finally:
            if not timed:  # the app failed, or the client went away, before any answer
                self._observe(scope, time.perf_counter() - started)

    def _observe(self, scope: Scope, seconds: float) -> None:
        method: str = scope["method"]
        if method not in METHODS:  # any token is a valid HTTP method
            method = OTHER
        route = scope.get("route")
        template: str = getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED
        key = (method, template)
        observe = self._observers.get(key)
        if observe is None:
            observe = self._observers[key] = REQUEST_DURATION.labels(method=method, route=template).observe
        observe(seconds)


# GET /metrics --------------------------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    """Where the workers keep their values, when several share one server (see the module's docstring)."""
    path = os.environ.get(MULTIPROCESS_DIR_ENV)
    return Path(path) if path else None


def _forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that are gone (uvicorn restarts a worker that died)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, under another user


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics in the format the scraper asked for (Prometheus text, or OpenMetrics), and its type."""
    encoder, content_type = choose_encoder(accept or "")
    directory = multiprocess_dir()
    if directory is None:
        return encoder(REGISTRY), content_type
    _forget_dead_workers(directory)
    registry = CollectorRegistry()  # a fresh one per scrape, as prometheus_client's multiprocess mode asks
    MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    return encoder(registry), content_type


async def metrics(request: Request) -> Response:
    """``GET /metrics``: public, like most Prometheus exporters (see the module's docstring)."""
    body, content_type = await run_in_threadpool(exposition, request.headers.get("accept"))  # reads files
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
