"""A service's authorization metrics, for Prometheus: mount ``metrics_app()`` at ``/metrics``.

    app = FastAPI(lifespan=verifier.lifespan)
    app.mount("/metrics", metrics_app())

Every live verifier is reported, labelled by its ``audience`` (verifiers of one audience add up):

- ``chit_sdk_decisions_total{audience, outcome, reason}``: ``outcome="allowed"`` for each request
  ``authorize`` let through, ``outcome="refused"`` with one of ``REASONS`` for each one the verifier
  refused (``invalid_token``, ``revoked``, ``insufficient_scope``, ``revocations_stale``,
  ``keys_unavailable``). Decisions the route body makes (``principal.require``) go to the decision
  log instead;
- ``chit_sdk_verification_seconds{audience}``: how long a full verification took, a token seen for the
  first time (a cache hit is a dictionary lookup and is not timed);
- ``chit_sdk_revocation_list_size{audience}``: entries of the revocation list the feed keeps;
- ``chit_sdk_revocation_feed_staleness_seconds{audience}``: since the feed last confirmed the list
  current (``+Inf`` before its first confirmation); the verifier's ``max_staleness`` is the alarm line;
- ``chit_sdk_revocation_events_applied_total{audience}``: feed events that changed the list.

A request must not pay for its metrics: the verifier counts in plain integers (``VerifierStats``) and
this module's collector, registered once in prometheus_client's default registry, reads them when
Prometheus scrapes. Verifiers are held weakly: one that is gone stops being reported.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REASONS = ("invalid_token", "revoked", "insufficient_scope", "revocations_stale", "keys_unavailable")
# seconds: from a JWT on known keys (tens of microseconds) to one that waited for a key fetch
LATENCY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)


class VerifierStats:
    """The counts one verifier keeps per request: plain integers, read at scrape time."""

    __slots__ = ("allowed", "latency_buckets", "latency_count", "latency_sum", "refused")

    def __init__(self) -> None:
        self.allowed = 0
        self.refused = dict.fromkeys(REASONS, 0)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.latency_sum = 0.0
        self.latency_count = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] += 1

    def timed(self, seconds: float) -> None:
        """A full verification that took ``seconds``."""
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1


class Measured(Protocol):
    """What the collector reads of a verifier."""

    audience: str
    stats: VerifierStats

    def revocation_figures(self) -> tuple[int, float, int] | None:
        """(list size, staleness in seconds, events applied) while it follows a feed, else None."""
        ...


_verifiers: weakref.WeakSet[Any] = weakref.WeakSet()


def measure(verifier: Measured) -> None:
    """Report ``verifier`` from now on, while it lives."""
    _verifiers.add(verifier)


class _Totals:
    def __init__(self) -> None:
        self.allowed = 0
        self.refused = dict.fromkeys(REASONS, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.feeds = 0
        self.size = 0
        self.staleness = 0.0
        self.applied = 0

    def add(self, verifier: Measured) -> None:
        stats = verifier.stats
        self.allowed += stats.allowed
        for reason, count in stats.refused.items():
            self.refused[reason] += count
        self.buckets = [a + b for a, b in zip(self.buckets, stats.latency_buckets, strict=True)]
        self.latency_sum += stats.latency_sum
        figures = verifier.revocation_figures()
        if figures is not None:
            size, staleness, applied = figures
            self.feeds += 1
            self.size = max(self.size, size)
            self.staleness = max(self.staleness, staleness)  # the worst of them decides
            self.applied += applied


class VerifierCollector(Collector):
    """Reads the live verifiers' counts when Prometheus scrapes."""

    def __init__(self, verifiers: Callable[[], Iterable[Measured]] = lambda: list(_verifiers)) -> None:
        self.verifiers = verifiers

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, _Totals] = {}
        for verifier in self.verifiers():
            totals.setdefault(verifier.audience, _Totals()).add(verifier)
        decisions = CounterMetricFamily(
            "chit_sdk_decisions",
            "Requests the verifier allowed, and those it refused by reason.",
            labels=["audience", "outcome", "reason"],
        )
        latency = HistogramMetricFamily(
            "chit_sdk_verification_seconds",
            "Time a full verification took (a token not in the verified-token cache).",
            labels=["audience"],
        )
        size = GaugeMetricFamily(
            "chit_sdk_revocation_list_size", "Entries in the local revocation list.", labels=["audience"]
        )
        staleness = GaugeMetricFamily(
            "chit_sdk_revocation_feed_staleness_seconds",
            "Seconds since the revocation feed last confirmed the list current (+Inf: never).",
            labels=["audience"],
        )
        applied = CounterMetricFamily(
            "chit_sdk_revocation_events_applied",
            "Revocation feed events that changed the local list.",
            labels=["audience"],
        )
        for audience, total in sorted(totals.items()):
            decisions.add_metric([audience, "allowed", ""], total.allowed)
            for reason, count in total.refused.items():
                decisions.add_metric([audience, "refused", reason], count)
            cumulative, running = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), total.buckets, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            latency.add_metric([audience], cumulative, total.latency_sum)
            if total.feeds:
                size.add_metric([audience], total.size)
                staleness.add_metric([audience], total.staleness)
                applied.add_metric([audience], total.applied)
        yield from (decisions, latency, size, staleness, applied)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


COLLECTOR = VerifierCollector()
REGISTRY.register(COLLECTOR)


def metrics_app() -> Callable[..., Any]:
    """The ASGI app that answers Prometheus with every metric of the default registry (the verifiers'
    among them): mount it at ``/metrics``. Like most exporters it asks for no credentials; the numbers
    name audiences and reasons, never a user, a client or a token."""
    return make_asgi_app(REGISTRY)
