"""The revocation feed in a service, against the real thing: ``chit serve`` over HTTP, Redis, uvicorn.

A verifier given the service's identity bootstraps its list before traffic, follows the stream (a
revocation at the auth server is refused within a second), resumes with ``Last-Event-ID`` after the
server restarts, follows Redis as a wake-up to poll the feed at once, and refuses writes (503 with ``Retry-After``)
while its list is stale, reads going on. Redis tests skip when no Redis answers on 127.0.0.1:6379,
and fail instead in CI.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
import uvicorn
from fastapi import FastAPI, Security
from helpers import (
    IN_CI,
    ChitServer,
    ServiceClient,
    access_token,
    claims_of,
    free_port,
    login,
    register_manifest,
    stop_process,
    user_token,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chit import InvalidTokenError, Principal, ServiceIdentity, Verifier
from chit.answers import answer_to
from chit.sdk import BearerAuthMiddleware, RevocationFeed, RevocationsStaleError, metrics_app, principal_of
from chit.sdk.revocation_feed import ServerSentEvent, server_sent_events
from chit.sdk.verifier import refuse_writes
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
REDIS_URL = "redis://127.0.0.1:6379/0"
READ = "photos:things:read"
WRITE = "photos:things:write"
MANIFEST = """\
id = "photos"

[permissions]
"things:read" = "Read things"
"things:write" = "Write things"

[roles]
editor = ["things:read", "things:write"]
"""
PASSWORD = "alice-password-long"


@dataclass
class Photos:
    """An auth server with the photos service registered and alice, an editor of it."""

    chit: ChitServer
    secret: str

    def identity(self) -> ServiceIdentity:
        return ServiceIdentity("photos", self.secret, issuer=self.chit.url)

    def verifier(self, **options: Any) -> Verifier:
        verifier = Verifier(self.chit.url, "photos", identity=self.identity(), **options)
        assert verifier.feed is not None
        verifier.feed.max_reconnect_delay = 0.5  # a restarted server is found again at once
        return verifier

    def token(self) -> str:
        return user_token(self.chit, "alice", PASSWORD)

    def revoke(self, token: str) -> None:
        """RFC 7009, by the client the token was issued to."""
        assert ServiceClient(self.chit, "chit-cli").revoke(token).status_code == 200


def photos_on(chit: ChitServer) -> Photos:
    secret = register_manifest(chit, chit.data_dir.parent, "photos", MANIFEST)
    chit.add_user("alice", PASSWORD)
    chit.cli_ok("grant", "user:alice", "photos:editor")
    return Photos(chit, secret)


@pytest.fixture
def photos(server: ChitServer) -> Photos:
    return photos_on(server)


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not redis_answers(REDIS_URL):
        message = "Redis is not reachable on 127.0.0.1:6379 (start it: redis-server --daemonize yes)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_photos(tmp_path: Path, redis_url: str) -> Iterator[Photos]:
    """The auth server publishing its revocations on Redis too."""
    with ChitServer(tmp_path / "data", free_port()).running("--redis-url", redis_url) as chit:
        yield photos_on(chit)


async def eventually(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``within`` seconds."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def refused(verifier: Verifier, token: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await verifier.verify(token)
        except InvalidTokenError as exc:
            return exc.reason == "token has been revoked"
        return False

    return check


# --- bootstrap ----------------------------------------------------------------------------------------


async def test_the_list_is_bootstrapped_before_traffic(photos: Photos) -> None:
    revoked, kept = photos.token(), photos.token()
    photos.revoke(revoked)
    async with photos.verifier() as verifier:  # start(): the list is current before the first request
        assert verifier.feed is not None
        assert verifier.revocations is not None
        assert verifier.feed.bootstrapped
        assert verifier.feed.cursor >= 1
        assert verifier.revocations.size >= 1
        assert verifier.feed.staleness() < 5
        with pytest.raises(InvalidTokenError, match="revoked"):
            await verifier.verify(revoked)
        assert (await verifier.verify(kept)).subject == claims_of(kept)["sub"]


async def test_the_first_request_waits_for_the_bootstrap_nobody_started(photos: Photos) -> None:
    revoked = photos.token()
    photos.revoke(revoked)
    verifier = photos.verifier()
    try:
        with pytest.raises(InvalidTokenError, match="revoked"):
            await verifier.verify(revoked)  # never seen before, yet refused on first sight
        assert verifier.feed is not None
        assert verifier.feed.bootstrapped
    finally:
        await verifier.aclose()


async def test_the_feed_reads_with_a_token_narrowed_to_the_feed_permission(photos: Photos) -> None:
    identity = photos.identity()
    feed = RevocationFeed(photos.chit.url, identity)
    assert feed.identity is not identity
    assert feed.identity.scope == ("chit:revocations:read",)
    async with feed:
        assert feed.bootstrapped
        token = await feed.identity.token()
        assert claims_of(token)["scope"] == "chit:revocations:read"
    assert identity.requests == 0  # the service's everyday token never carried it


# --- the stream ---------------------------------------------------------------------------------------


async def test_a_revoked_token_is_refused_within_a_second_by_the_stream(photos: Photos) -> None:
    async with photos.verifier() as verifier:
        assert verifier.feed is not None
        token = photos.token()
        await verifier.verify(token)  # cached from now on: the list is asked on every request all the same
        polls = verifier.feed.polls
        photos.revoke(token)
        assert await eventually(refused(verifier, token), 1.0, "the token's refusal") < 1.0
        assert verifier.feed.polls == polls  # it came by the stream


async def test_a_session_and_a_user_logged_out_everywhere_are_refused_by_the_stream(photos: Photos) -> None:
    async with photos.verifier() as verifier:
        answer = login(photos.chit, "alice", PASSWORD)
        session_token, refresh_token = access_token(answer), answer.json()["refresh_token"]
        other = photos.token()
        await verifier.verify(session_token)
        await verifier.verify(other)
        photos.revoke(refresh_token)  # the session: every access token issued from it
        await eventually(refused(verifier, session_token), 1.0, "the session's refusal")
        assert (await verifier.verify(other)).subject == claims_of(other)["sub"]
        logged_out_at = time.time()
        photos.chit.cli_ok("user", "logout-everywhere", "alice")  # another process: the server reads the database
        await eventually(refused(verifier, other), 2.0, "the user's refusal")
        await asyncio.sleep(int(logged_out_at) + 2 - time.time())  # what is issued in that second goes too
        assert (await verifier.verify(photos.token())).subject == claims_of(other)["sub"]  # a new login works


async def test_the_stream_resumes_from_its_last_event_after_the_server_restarts(photos: Photos) -> None:
    async with photos.verifier() as verifier:
        feed = verifier.feed
        assert feed is not None
        token = photos.token()
        first = photos.token()
        photos.revoke(first)
        await eventually(refused(verifier, first), 1.0, "the first refusal")
        await verifier.verify(token)
        cursor, polls, connections = feed.cursor, feed.polls, feed.connections
        photos.chit.stop()
        photos.chit.cli_ok("user", "logout-everywhere", "alice")  # while the server is down
        photos.chit.start()
        await eventually(refused(verifier, token), 15.0, "the refusal after the restart")
        assert feed.connections > connections
        assert feed.cursor > cursor
        assert feed.polls == polls  # from Last-Event-ID on the new stream, not by a new bootstrap


# --- Redis --------------------------------------------------------------------------------------------


async def test_with_redis_a_revoked_token_is_refused_within_a_second(redis_photos: Photos, redis_url: str) -> None:
    async with redis_photos.verifier(redis_url=redis_url) as verifier:
        feed = verifier.feed
        assert feed is not None

        async def subscribed() -> bool:
            return feed.connections >= 1 and feed.polls >= 2  # subscribed, then caught up

        await eventually(subscribed, 5.0, "the subscription")
        token = redis_photos.token()
        await verifier.verify(token)
        polls = feed.polls
        redis_photos.revoke(token)
        assert await eventually(refused(verifier, token), 1.0, "the token's refusal") < 1.0
        # Redis woke the feed, which read the event from the feed endpoint at once: the scheduled poll is seconds
        # away, and a message on Redis is never applied as it stands
        assert feed.polls > polls
        assert feed.staleness() < verifier.max_staleness


@pytest.fixture
def private_redis(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of the service's own, on which the auth server publishes nothing."""
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield url, process
    finally:
        stop_process(process)


async def test_what_redis_never_brought_is_caught_up_from_the_feed_and_redis_going_away_loses_nothing(
    redis_photos: Photos, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = private_redis
    async with redis_photos.verifier(redis_url=url, max_staleness=3) as verifier:  # polls every second
        feed = verifier.feed
        assert feed is not None
        token = redis_photos.token()
        await verifier.verify(token)
        redis_photos.revoke(token)  # published on the auth server's Redis, not this one
        await eventually(refused(verifier, token), 3.0, "the catch-up")
        stop_process(process)
        other = redis_photos.token()
        await verifier.verify(other)
        redis_photos.revoke(other)
        await eventually(refused(verifier, other), 3.0, "the catch-up without Redis")
        await asyncio.sleep(2)
        assert feed.staleness() < 3  # the polls keep confirming the list while Redis is away


# --- staleness in a service on uvicorn ----------------------------------------------------------------


class Service:
    """A FastAPI service on uvicorn in a thread of this process, lifespan on (the list bootstrapped before
    it serves), with a Starlette part behind ``BearerAuthMiddleware`` and ``/metrics``."""

    def __init__(self, verifier: Verifier) -> None:
        async def notes(request: Request) -> JSONResponse:
            principal = principal_of(request)
            assert principal is not None
            return JSONResponse({"subject": principal.subject, "method": request.method})

        plain = Starlette(
            routes=[Route("/notes", notes, methods=["GET", "POST"])],
            middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)],
        )
        app = FastAPI(lifespan=verifier.lifespan)
        app.mount("/metrics", metrics_app())
        app.mount("/plain", plain)

        @app.get("/things")
        async def read(principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
            return {"read_by": principal.subject}

        @app.post("/things")
        async def write(principal: Principal = Security(verifier, scopes=[WRITE])) -> dict[str, str]:
            return {"written_by": principal.subject}

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        time.sleep(0.05)


def test_a_stale_list_refuses_writes_with_503_and_retry_after_while_reads_pass(photos: Photos) -> None:
    verifier = photos.verifier(max_staleness=1.5)
    token = photos.token()
    bearer = {"Authorization": f"Bearer {token}"}
    with Service(verifier) as service, httpx.Client(base_url=service.url, headers=bearer, timeout=10) as http:
        assert verifier.feed is not None
        assert verifier.feed.bootstrapped  # by the lifespan, before serving
        assert http.post("/things").status_code == 200
        assert http.post("/plain/notes").status_code == 200

        photos.chit.stop()
        wait_for(lambda: http.post("/things").status_code == 503, 10, "the refusal of writes")
        answer = http.post("/things")
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json() == {"detail": "authorization is temporarily unavailable"}
        plain = http.post("/plain/notes")
        assert plain.status_code == 503
        assert int(plain.headers["retry-after"]) >= 1
        assert plain.json()["error"] == "temporarily_unavailable"
        assert http.get("/things").json() == {"read_by": claims_of(token)["sub"]}  # reads go on
        assert http.get("/plain/notes").status_code == 200
        assert verifier.feed.staleness() > 1.5

        photos.chit.start()
        wait_for(lambda: http.post("/things").status_code == 200, 15, "writes after the feed came back")
        assert http.post("/plain/notes").status_code == 200

        exposition = http.get("/metrics", follow_redirects=True).text
    for name in (
        "chit_sdk_decisions_total",
        "chit_sdk_verification_seconds_bucket",
        "chit_sdk_revocation_list_size",
        "chit_sdk_revocation_feed_staleness_seconds",
        "chit_sdk_revocation_events_applied_total",
    ):
        assert name in exposition, name
    assert 'chit_sdk_decisions_total{audience="photos",outcome="refused",reason="revocations_stale"}' in exposition
    assert 'chit_sdk_decisions_total{audience="photos",outcome="allowed",reason=""}' in exposition
    assert not verifier.feed.running  # the lifespan stopped the follower


# --- keys -----------------------------------------------------------------------------------------------


async def test_a_revoked_signing_key_refuses_every_token_it_signed(photos: Photos) -> None:
    async with photos.verifier() as verifier:
        token = photos.token()
        await verifier.verify(token)  # cached, and its key in hand
        kid = jwt.get_unverified_header(token)["kid"]
        photos.chit.cli_ok("keys", "rotate", "--now", "--revoke-old")  # a key compromise
        await eventually(refused(verifier, token), 2.0, "the refusal of what the old key signed")
        assert kid in verifier.jwks.banned


async def test_a_revoked_root_key_refuses_its_chits_while_still_published(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    chit = issuer.chit("usr_alice", ["image-store:images:read"])
    await verifier.verify(chit)
    verifier.root_keys.ban(f"root-{issuer.root_key.id}")  # as a key event does, with the cache emptied
    assert verifier.cache is not None
    verifier.cache.clear()
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(chit)
    issuer.rotate_root_key()
    clock.advance(11)  # past the cool-down: the new root key may be fetched
    assert (await verifier.verify(issuer.chit("usr_alice", ["image-store:images:read"]))).kind == "chit"
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(chit)


async def test_a_banned_kid_is_refused_without_a_refetch(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_alice", ["image-store:images:read"])
    await verifier.verify(token)
    verifier.jwks.ban(jwt.get_unverified_header(token)["kid"])
    assert verifier.cache is not None
    verifier.cache.clear()
    fetches = verifier.jwks.fetches
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)
    assert verifier.jwks.fetches == fetches


# --- the pieces -------------------------------------------------------------------------------------------


async def test_server_sent_events_are_parsed_as_the_html_standard_says() -> None:
    text = (
        "retry: 1000\n\n"
        ": keepalive\n\n"
        'id: 7\nevent: revocation\ndata: {"id": 7,\ndata:  "x": 1}\n\n'
        "data:no space\n\n"
        "id: 8\nevent: revocation\n"  # never dispatched: no blank line follows
    )

    async def lines() -> AsyncIterator[str]:
        for line in text.split("\n"):
            yield line

    events = [event async for event in server_sent_events(lines())]
    assert events == [
        ServerSentEvent(data="keepalive", comment=True),
        ServerSentEvent("revocation", '{"id": 7,\n "x": 1}', "7"),
        ServerSentEvent("message", "no space", "7"),  # the last event id stands until another is sent
    ]


def test_the_default_policy_refuses_writes_and_unknown_methods_only() -> None:
    assert not refuse_writes("GET", frozenset())
    assert not refuse_writes("head", frozenset())
    assert not refuse_writes("OPTIONS", frozenset())
    assert refuse_writes("POST", frozenset())
    assert refuse_writes("DELETE", frozenset())
    assert refuse_writes(None, frozenset())  # a WebSocket, a call outside HTTP


def test_a_stale_list_is_answered_503_with_retry_after() -> None:
    answer = answer_to(RevocationsStaleError(float("inf"), retry_after=3))
    assert (answer.status, answer.error, answer.headers) == (503, "temporarily_unavailable", {"Retry-After": "3"})
    assert "never confirmed" in str(RevocationsStaleError(float("inf")))


def test_a_feed_refuses_clear_text_issuers() -> None:
    with pytest.raises(ValueError, match="https"):
        ServiceIdentity("photos", "secret", issuer="http://auth.example.com")  # its secret would travel in clear
    identity = ServiceIdentity("photos", "secret", issuer="https://auth.example.com")
    with pytest.raises(ValueError, match="https"):
        RevocationFeed("http://auth.example.com", identity)
    with pytest.raises(TypeError, match="identity"):
        Verifier("https://auth.example.com", "photos", redis_url=REDIS_URL)
