"""Prometheus metrics (issue 17): ``GET /metrics`` of a real server counts exactly the token requests
answered, labels requests by route template (never a raw path), and sums every worker of
``chit serve --workers N``; ``chit serve --redis-url`` refuses a bad URL as a usage error.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import ChitServer, ModuleServers, free_port
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from chit.server import metrics
from chit.server.metrics import RequestDurationMiddleware

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SERVICE = """\
id = "ledger"

[permissions]
"entries:read" = "Read an entry"
"entries:write" = "Write an entry"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("metrics", manifests=[SERVICE])


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(chit: ChitServer) -> Samples:
    """``/metrics`` over a new connection (with several workers, any of them may answer)."""
    response = httpx.get(chit.url + "/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# the token endpoint ----------------------------------------------------------------------------------


def test_token_answers_count_exactly_what_was_sent(chit: ChitServer) -> None:
    client = chit.add_client("metrics-svc", "--scope", "ledger:entries:read")
    auth = ("metrics-svc", client["client_secret"])

    def token(data: dict[str, str], auth: tuple[str, str] | None = auth) -> httpx.Response:
        return httpx.post(chit.token_url, data=data, auth=auth, timeout=30)

    before = scrape(chit)
    for _ in range(3):
        assert token({"grant_type": "client_credentials"}).status_code == 200
    for _ in range(2):
        assert token({"grant_type": "client_credentials"}, ("metrics-svc", "wrong")).status_code == 401
    assert token({"grant_type": "client_credentials"}, ("nobody", "nothing")).status_code == 401
    for _ in range(2):
        refused = token({"grant_type": "client_credentials", "scope": "ledger:entries:write"})
        assert refused.json()["error"] == "invalid_scope"
    assert token({"grant_type": "implicit"}).json()["error"] == "unsupported_grant_type"
    assert token({"grant_type": "x" * 200 + secrets.token_hex(4)}).json()["error"] == "unsupported_grant_type"
    assert token({"scope": "ledger:entries:read"}).json()["error"] == "invalid_request"  # no grant type
    after = scrape(chit)

    issued = "chit_tokens_issued_total"
    refused_total = "chit_tokens_refused_total"
    assert moved(before, after, issued, grant="client_credentials") == 3
    assert moved(before, after, refused_total, grant="client_credentials", error="invalid_client") == 3
    assert moved(before, after, refused_total, grant="client_credentials", error="invalid_scope") == 2
    assert moved(before, after, refused_total, grant="other", error="unsupported_grant_type") == 2
    assert moved(before, after, refused_total, grant="other", error="invalid_request") == 1
    assert (
        sum(v for (name, _), v in after.items() if name == issued)
        - sum(v for (name, _), v in before.items() if name == issued)
        == 3
    )
    assert (
        sum(v for (name, _), v in after.items() if name == refused_total)
        - sum(v for (name, _), v in before.items() if name == refused_total)
        == 8
    )
    grants = {dict(labels)["grant"] for (name, labels) in after if name in (issued, refused_total)}
    assert grants <= {"client_credentials", "password", "refresh_token", TOKEN_EXCHANGE, "other"}


def test_every_known_grant_shows_from_the_start(chit: ChitServer) -> None:
    samples = scrape(chit)
    for grant in ("client_credentials", "password", "refresh_token", TOKEN_EXCHANGE):
        assert ("chit_tokens_issued_total", frozenset({("grant", grant)})) in samples


# requests by route ----------------------------------------------------------------------------------


def test_a_route_label_is_the_template_never_the_raw_path(chit: ChitServer) -> None:
    ids = [secrets.token_hex(8) for _ in range(4)]
    before = scrape(chit)
    assert httpx.post(f"{chit.url}/admin/users/{ids[0]}/disable", timeout=30).status_code == 401
    assert httpx.delete(f"{chit.url}/admin/sessions/{ids[1]}", timeout=30).status_code == 401
    assert httpx.get(f"{chit.url}/admin/sessions/{ids[2]}", timeout=30).status_code == 405
    assert httpx.get(f"{chit.url}/no-such-page/{ids[3]}", timeout=30).status_code == 404
    assert httpx.request("PROPFIND", chit.url + "/healthz", timeout=30).status_code == 405
    after = scrape(chit)

    count = "chit_http_request_duration_seconds_count"
    assert moved(before, after, count, method="POST", route="/admin/users/{username}/disable") == 1
    assert moved(before, after, count, method="DELETE", route="/admin/sessions/{session_id}") == 1
    assert moved(before, after, count, method="GET", route="/admin/sessions/{session_id}") == 1
    assert moved(before, after, count, method="GET", route="unmatched") == 1
    assert moved(before, after, count, method="other", route="/healthz") == 1
    for _name, labels in after:
        for _label, text in labels:
            assert not any(i in text for i in ids), labels


def test_metrics_is_public_prometheus_text_and_not_in_the_api_docs(chit: ChitServer) -> None:
    response = httpx.get(chit.url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    assert "# TYPE chit_http_request_duration_seconds histogram" in response.text
    openmetrics = httpx.get(
        chit.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=30
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    paths = httpx.get(chit.url + "/openapi.json", timeout=30).json()["paths"]
    assert "/metrics" not in paths


# several workers ----------------------------------------------------------------------------------


def worker_counts(directory: Path, route: str) -> list[float]:
    """Each worker's own count of GET requests to ``route``, from its file in the metrics directory."""
    counts = []
    for path in sorted(directory.glob("histogram_*.db")):
        total = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels == {"method": "GET", "route": route}:
                    total += sample.value
        counts.append(total)
    return counts


def test_several_workers_tell_the_whole_servers_numbers(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # where the server's metrics directory goes
    scratch.mkdir()
    chit = ChitServer(tmp_path / "data", free_port(), extra_env={"TMPDIR": str(scratch)})
    with chit.running("--workers", "2"):
        [directory] = scratch.glob("chit-metrics-*")
        client = chit.add_client("workers-svc")
        auth = ("workers-svc", client["client_secret"])
        before = scrape(chit)
        requests, tokens = 240, 30
        with ThreadPoolExecutor(16) as pool:  # a new connection each: the workers share them out
            health = pool.map(lambda _: httpx.get(chit.url + "/healthz", timeout=30).status_code, range(requests))
            issued = pool.map(
                lambda _: (
                    httpx.post(
                        chit.token_url, data={"grant_type": "client_credentials"}, auth=auth, timeout=30
                    ).status_code
                ),
                range(tokens),
            )
            assert set(health) == {200}
            assert set(issued) == {200}
        per_worker = worker_counts(directory, "/healthz")
        assert len([c for c in per_worker if c > 0]) >= 2, per_worker  # both workers served some
        for _ in range(6):  # whichever worker answers
            after = scrape(chit)
            count = "chit_http_request_duration_seconds_count"
            assert moved(before, after, count, method="GET", route="/healthz") == requests
            assert moved(before, after, "chit_tokens_issued_total", grant="client_credentials") == tokens
            assert value(after, "chit_feed_subscribers") == 0
        assert sum(per_worker) == value(after, count, method="GET", route="/healthz")
    assert list(scratch.iterdir()) == []  # removed when the server stopped


def test_a_dead_workers_open_streams_leave_the_gauge(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    for pid in (dead_pid, os.getpid()):
        gauge = MmapedDict(str(tmp_path / f"gauge_livesum_{pid}.db"))
        gauge.close()
    metrics._forget_dead_workers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"gauge_livesum_{os.getpid()}.db"]


# chit serve --redis-url -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_refuses_a_bad_redis_url_as_a_usage_error(tmp_path: Path, how: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    args = [sys.executable, "-m", "chit", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]
    if how == "option":
        args += ["--redis-url", "not-a-url"]
    else:
        env["CHIT_REDIS_URL"] = "not-a-url"
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "--redis-url" in result.stderr
    assert "'not-a-url' is not a redis://" in " ".join(result.stderr.replace("│", " ").split())
    assert not (tmp_path / "data").exists()


def test_a_redis_url_reaches_the_servers_settings(tmp_path: Path) -> None:
    from chit.cli.serve import check_redis_option

    assert check_redis_option("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert check_redis_option(None) is None


# what the revocation feed calls ----------------------------------------------------------------------


def in_process() -> Samples:
    body, content_type = metrics.exposition(None)
    assert content_type.startswith("text/plain")
    return parse(body.decode())


@pytest.fixture
def open_streams() -> Iterator[None]:
    """Leaves the subscriber gauge as it found it."""
    start = value(in_process(), "chit_feed_subscribers")
    yield
    while value(in_process(), "chit_feed_subscribers") > start:
        metrics.feed_subscriber_closed()


@pytest.mark.usefixtures("open_streams")
def test_revocations_and_the_feed_show_in_the_exposition() -> None:
    before = in_process()
    metrics.revocation_published("token")
    metrics.revocation_published("token")
    metrics.revocation_published("session")
    metrics.revocation_published("anything else")
    metrics.feed_subscriber_opened()
    metrics.feed_subscriber_opened()
    metrics.feed_subscriber_closed()
    metrics.feed_event_delivered(time.time() - 0.3)
    metrics.feed_event_delivered(time.time() + 5)  # a clock ahead of ours: no lag, never negative
    metrics.redis_publish_failed()
    after = in_process()

    published = "chit_revocations_published_total"
    assert moved(before, after, published, kind="token") == 2
    assert moved(before, after, published, kind="session") == 1
    assert moved(before, after, published, kind="other") == 1
    assert moved(before, after, "chit_feed_subscribers") == 1
    assert moved(before, after, "chit_feed_lag_seconds_count") == 2
    assert moved(before, after, "chit_feed_lag_seconds_bucket", le="0.001") == 1
    assert moved(before, after, "chit_feed_lag_seconds_bucket", le="0.25") == 1
    assert moved(before, after, "chit_feed_lag_seconds_bucket", le="0.5") == 2
    assert 0.3 <= moved(before, after, "chit_feed_lag_seconds_sum") < 1
    assert moved(before, after, "chit_redis_publish_failures_total") == 1


# the middleware, in process ---------------------------------------------------------------------------


def test_the_middleware_times_failures_and_bounds_its_labels() -> None:
    async def ok(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def broken(_request: Request) -> PlainTextResponse:
        raise RuntimeError("broken")

    app = RequestDurationMiddleware(Starlette(routes=[Route("/items/{item_id}", ok), Route("/broken", broken)]))

    async def requests() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/items/7")).status_code == 200
            assert (await http.get("/broken")).status_code == 500
            for _ in range(20):
                await http.request(secrets.token_hex(4).upper(), "/items/8")

    before = in_process()
    asyncio.run(requests())
    after = in_process()

    count = "chit_http_request_duration_seconds_count"
    assert moved(before, after, count, method="GET", route="/items/{item_id}") == 1
    assert moved(before, after, count, method="GET", route="/broken") == 1
    assert moved(before, after, count, method="other", route="/items/{item_id}") == 20
    assert len(app._observers) == 3  # one per (bounded method, route)
