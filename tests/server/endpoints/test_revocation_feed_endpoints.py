"""The revocation feed on the wire (DESIGN §4): who may read it, what a revocation puts in it, paging by
cursor, and the server-sent-events stream resuming from ``Last-Event-ID``; against a real ``chit serve``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    ChitServer,
    ModuleServers,
    ServiceClient,
    assert_error,
    at_once,
    claims_of,
    login,
    register_service,
    user_token,
)

FEED = "chit:revocations:read"
MANIFEST = """\
id = "image-store"
[permissions]
"images:read" = "Read images"
"""
NEEDS_NOTHING = """\
id = "quiet"
[permissions]
"things:read" = "Read things"
"""


class Feed:
    def __init__(self, chit: ChitServer, service: ServiceClient) -> None:
        self.chit = chit
        self.service = service
        self.token = feed_token(service)

    def get(self, **params: str) -> httpx.Response:
        return httpx.get(self.chit.url + "/oauth2/revocations", params=params, headers=self.headers, timeout=30)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        response = self.get(after=str(after))
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def last_id(self) -> int:
        cursor: int = self.get(after="0").json()["cursor"]
        return cursor


def feed_token(service: ServiceClient) -> str:
    response = service.post("/oauth2/token", {"grant_type": "client_credentials", "scope": FEED})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def installed(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> tuple[ChitServer, Feed]:
    chit = module_server("feed", env={"CHIT_FEED_HEARTBEAT": "1"})
    service = register_service(chit, tmp_path_factory.mktemp("manifests"), "image-store", MANIFEST)
    return chit, Feed(chit, service)


@pytest.fixture
def chit(installed: tuple[ChitServer, Feed]) -> ChitServer:
    return installed[0]


@pytest.fixture
def feed(installed: tuple[ChitServer, Feed]) -> Feed:
    return installed[1]


def user(chit: ChitServer, name: str) -> str:
    chit.add_user(name, "correct horse battery")
    return user_token(chit, name, "correct horse battery")


# --- who may read it --------------------------------------------------------------------------------


def test_discovery_names_the_feed_and_the_stream(chit: ChitServer) -> None:
    metadata = httpx.get(chit.url + "/.well-known/oauth-authorization-server").json()
    assert metadata["revocation_feed_endpoint"] == chit.url + "/oauth2/revocations"
    assert metadata["revocation_stream_endpoint"] == chit.url + "/oauth2/revocations/stream"


def test_a_service_token_carries_the_feed_permission_only_when_asked(
    chit: ChitServer, tmp_path: Path, feed: Feed
) -> None:
    quiet = register_service(chit, tmp_path, "quiet", NEEDS_NOTHING)
    usual = quiet.post("/oauth2/token", {"grant_type": "client_credentials"}).json()
    assert usual["scope"] == ""  # a service that needs nothing gets tokens with no permissions (DESIGN §4)
    asked = claims_of(feed_token(quiet))
    assert asked["scope"] == FEED
    assert asked["aud"] == ["chit"]
    assert claims_of(feed.token)["scope"] == FEED  # nothing else rides along


def test_a_client_that_is_no_service_cannot_get_the_feed_permission(chit: ChitServer) -> None:
    secret = chit.add_client("batch-job", "--grant", "client_credentials")["client_secret"]
    response = httpx.post(
        chit.token_url, data={"grant_type": "client_credentials", "scope": FEED}, auth=("batch-job", secret)
    )
    assert_error(response, 400, "invalid_scope")


@pytest.mark.parametrize("path", ["/oauth2/revocations", "/oauth2/revocations/stream"])
def test_reading_without_a_token_is_a_bare_challenge(chit: ChitServer, path: str) -> None:
    response = httpx.get(chit.url + path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/oauth2/revocations", "/oauth2/revocations/stream"])
def test_reading_with_a_forged_or_foreign_token_is_invalid_token(chit: ChitServer, feed: Feed, path: str) -> None:
    head, payload, signature = feed.token.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    for token in (forged, "not-a-token", feed.token + "x"):
        response = httpx.get(chit.url + path, headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 401, "invalid_token")
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize("path", ["/oauth2/revocations", "/oauth2/revocations/stream"])
def test_reading_with_a_token_that_lacks_the_permission_is_insufficient_scope(
    chit: ChitServer, feed: Feed, path: str
) -> None:
    tokens = [
        user(chit, f"reader-{path.count('/')}"),  # a user's own token, for the chit audience
        feed.service.own_token(),  # the service's usual token
    ]
    for token in tokens:
        response = httpx.get(chit.url + path, headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 403, "insufficient_scope")
        assert FEED in response.headers["www-authenticate"]


def test_a_revoked_feed_token_no_longer_reads(chit: ChitServer, feed: Feed) -> None:
    own = Feed(chit, feed.service)
    assert own.get().status_code == 200
    assert feed.service.revoke(own.token).status_code == 200
    assert_error(own.get(), 401, "invalid_token")


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "9223372036854775808", " 1", "0x10", "\u0661"])
def test_a_bad_cursor_is_invalid_request(feed: Feed, after: str) -> None:
    assert_error(feed.get(after=after), 400, "invalid_request", "after")


@pytest.mark.parametrize("last", ["-1", "abc", "1.5", "9223372036854775808", "0x10", "1, 2"])
def test_a_bad_last_event_id_is_invalid_request(feed: Feed, last: str) -> None:
    url = feed.chit.url + "/oauth2/revocations/stream"
    response = httpx.get(url, headers={**feed.headers, "Last-Event-ID": last}, timeout=10)
    assert_error(response, 400, "invalid_request", "Last-Event-ID")


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "ten"])
def test_a_bad_limit_is_invalid_request(feed: Feed, limit: str) -> None:
    assert_error(feed.get(limit=limit), 400, "invalid_request", "limit")


# --- what a revocation puts in it ---------------------------------------------------------------------


def test_revoking_an_access_token_appends_a_token_event(chit: ChitServer, feed: Feed) -> None:
    before = feed.last_id()
    token = user(chit, "tina")
    assert httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"}).status_code == 200
    claims = claims_of(token)
    [event] = feed.events(before)
    assert event == {
        "id": before + 1,
        "kind": "token",
        "value": claims["jti"],
        "not_before": None,
        "expires": claims["exp"],
    }
    # revoking it again says nothing new
    assert httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"}).status_code == 200
    assert feed.events(before + 1) == []


def test_revoking_a_refresh_token_appends_a_session_event(chit: ChitServer, feed: Feed) -> None:
    chit.add_user("rita", "correct horse battery")
    tokens = login(chit, "rita", "correct horse battery").json()
    before = feed.last_id()
    data = {"token": tokens["refresh_token"], "client_id": "chit-cli"}
    assert httpx.post(chit.url + "/oauth2/revoke", data=data).status_code == 200
    [event] = feed.events(before)
    assert event["kind"] == "session"
    assert event["value"] == claims_of(tokens["access_token"])["sid"]
    assert event["not_before"] is None


def test_disabling_a_user_appends_a_subject_event_with_its_cut(chit: ChitServer, feed: Feed) -> None:
    token = user(chit, "dora")
    before = feed.last_id()
    started = int(time.time())
    chit.cli_ok("user", "disable", "dora")
    [event] = feed.events(before)
    claims = claims_of(token)
    assert event["kind"] == "subject"
    assert event["value"] == claims["sub"]
    assert claims["iat"] < event["not_before"] <= int(time.time()) + 1
    assert event["expires"] >= started + claims["exp"] - claims["iat"]
    chit.cli_ok("user", "disable", "dora")  # disabling again publishes nothing
    chit.cli_ok("user", "enable", "dora")  # nor does enabling
    assert feed.events(event["id"]) == []


def test_removing_a_service_appends_a_client_event(chit: ChitServer, feed: Feed, tmp_path: Path) -> None:
    doomed = register_service(chit, tmp_path, "doomed", NEEDS_NOTHING.replace("quiet", "doomed"))
    doomed.own_token()
    before = feed.last_id()
    chit.cli_ok("service", "remove", "doomed")
    [event] = feed.events(before)
    assert event["kind"] == "client"
    assert event["value"] == "doomed"
    assert event["not_before"] is not None


def test_concurrent_revocations_each_appear_once_in_order(chit: ChitServer, feed: Feed) -> None:
    tokens = [user(chit, f"crowd-{n}") for n in range(10)]
    before = feed.last_id()

    def revoke(n: int) -> int:
        token = tokens[n % 10]  # each token revoked twice at once
        data = {"token": token, "client_id": "chit-cli"}
        return httpx.post(chit.url + "/oauth2/revoke", data=data, timeout=30).status_code

    assert at_once(20, revoke) == [200] * 20
    events = feed.events(before)
    assert sorted(e["value"] for e in events) == sorted(claims_of(t)["jti"] for t in tokens)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == 10


def test_pages_follow_the_cursor(chit: ChitServer, feed: Feed) -> None:
    tokens = [user(chit, f"pager-{n}") for n in range(5)]
    before = feed.last_id()
    for token in tokens:
        httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    first = feed.get(after=str(before), limit="2").json()
    assert [e["value"] for e in first["events"]] == [claims_of(t)["jti"] for t in tokens[:2]]
    assert first["cursor"] == first["events"][-1]["id"]
    rest = feed.get(after=str(first["cursor"]), limit="1000").json()
    assert [e["value"] for e in rest["events"]] == [claims_of(t)["jti"] for t in tokens[2:]]
    empty = feed.get(after=str(rest["cursor"])).json()
    assert empty == {"events": [], "cursor": rest["cursor"]}


# --- the stream ---------------------------------------------------------------------------------------


class Stream:
    """A stream read on a thread: each event's arrival time, and the comments seen."""

    def __init__(self, feed: Feed, **headers: str) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.comments: list[str] = []
        self.status = 0
        self.error: httpx.HTTPError | None = None
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(feed, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(10)

    def _read(self, feed: Feed, headers: dict[str, str]) -> None:
        import json

        url = feed.chit.url + "/oauth2/revocations/stream"
        try:
            with httpx.stream("GET", url, headers={**feed.headers, **headers}, timeout=30) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line == "":
                        if "data" in fields:
                            self.events.append((time.monotonic(), {**json.loads(fields["data"]), "_id": fields["id"]}))
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value.strip()
        except httpx.HTTPError as exc:  # the server went away mid-stream (a module's servers stop last)
            self.error = exc
        finally:
            self._opened.set()
            self.closed.set()

    def wait_for(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return [event for _, event in self.events]

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.stop()


def test_a_stream_carries_each_revocation_within_a_second(chit: ChitServer, feed: Feed, streams: list[Stream]) -> None:
    stream = Stream(feed, **{"Last-Event-ID": str(feed.last_id())})
    streams.append(stream)
    assert stream.status == 200
    assert stream.content_type.startswith("text/event-stream")
    token = user(chit, "sam")
    revoked_at = time.monotonic()
    httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    [event] = stream.wait_for(1)
    assert event["kind"] == "token"
    assert event["value"] == claims_of(token)["jti"]
    assert event["_id"] == str(event["id"])
    assert stream.events[0][0] - revoked_at < 1.0


def test_a_stream_carries_what_another_process_revoked(chit: ChitServer, feed: Feed, streams: list[Stream]) -> None:
    user(chit, "olga")
    stream = Stream(feed, **{"Last-Event-ID": str(feed.last_id())})
    streams.append(stream)
    chit.cli_ok("user", "disable", "olga")  # the CLI writes the database from a process of its own
    [event] = stream.wait_for(1)
    assert event["kind"] == "subject"


def test_a_stream_resumes_after_its_last_event_id(chit: ChitServer, feed: Feed, streams: list[Stream]) -> None:
    tokens = [user(chit, f"resume-{n}") for n in range(3)]
    before = feed.last_id()
    for token in tokens:
        httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    stream = Stream(feed, **{"Last-Event-ID": str(before + 1)})
    streams.append(stream)
    values = [e["value"] for e in stream.wait_for(2)]
    assert values == [claims_of(t)["jti"] for t in tokens[1:]]
    time.sleep(0.3)
    assert len(stream.events) == 2  # nothing twice


def test_a_quiet_stream_says_it_is_alive(feed: Feed, streams: list[Stream]) -> None:
    stream = Stream(feed, **{"Last-Event-ID": str(feed.last_id())})
    streams.append(stream)
    deadline = time.monotonic() + 3
    while not stream.comments and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream.comments == [": keepalive"] or stream.comments[:1] == [": keepalive"]


def test_a_stream_from_the_start_leaves_out_nothing_still_in_force(
    chit: ChitServer, feed: Feed, streams: list[Stream]
) -> None:
    token = user(chit, "early")
    httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    stream = Stream(feed)
    streams.append(stream)
    everything = feed.events(0)
    assert [e["id"] for e in stream.wait_for(len(everything))] == [e["id"] for e in everything]


def test_twenty_streams_at_once_each_carry_the_revocation(chit: ChitServer, feed: Feed, streams: list[Stream]) -> None:
    start = feed.last_id()
    opened = at_once(20, lambda _: Stream(feed, **{"Last-Event-ID": str(start)}))
    streams.extend(opened)
    assert {stream.status for stream in opened} == {200}
    token = user(chit, "crowded")
    httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    for stream in opened:
        assert [e["value"] for e in stream.wait_for(1)] == [claims_of(token)["jti"]]
    metrics = httpx.get(chit.url + "/metrics").text
    assert "chit_feed_subscribers" in metrics


def test_a_stream_ends_when_the_token_it_was_opened_with_expires(
    module_server: ModuleServers, tmp_path: Path, streams: list[Stream]
) -> None:
    short = module_server("short-feed", env={"CHIT_ACCESS_TOKEN_TTL": "2", "CHIT_FEED_HEARTBEAT": "1"})
    service = register_service(short, tmp_path, "image-store", MANIFEST)
    stream = Stream(Feed(short, service))
    streams.append(stream)
    assert stream.status == 200
    # the follower reconnects with a fresh token and its Last-Event-ID: an expired one reads nothing more
    assert stream.closed.wait(2 + 1 + 5)
