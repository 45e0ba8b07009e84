"""A message on the Redis channel is a wake-up, never a revocation (DESIGN §4, "Revocation feed").

Redis authenticates no publisher: whoever may publish on ``chit:revocations:<issuer>`` could otherwise
revoke the live signing key, a user, a client or any token in every service. A service following Redis
polls the feed at once when a message announces an event past its cursor, and applies only what the
feed, read with its own token, returns. Against a real ``chit serve --redis-url`` and the real Redis on
127.0.0.1:6379: forged events of each kind change nothing (tokens still verify, the list keeps its
size), while a revocation made at the server still reaches the service through Redis and the poll it
wakes. These tests skip when no Redis answers, and fail instead in CI.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import redis
from helpers import IN_CI, ChitServer, ModuleServers, ServiceClient, claims_of, register_manifest, user_token

from chit import InvalidTokenError, ServiceIdentity, Verifier
from chit.sdk import RevocationFeed
from chit.sdk.revocation_feed import MIN_WAKE_GAP

pytestmark = pytest.mark.anyio
REDIS_URL = "redis://127.0.0.1:6379/0"
MANIFEST = """\
id = "photos"

[permissions]
"things:read" = "Read things"

[roles]
reader = ["things:read"]
"""
PASSWORD = "wake-up-password-long"
WITHIN = 5.0  # seconds a test waits for what must happen; the feed's own polls are 10 s apart


@dataclass
class Photos:
    """An auth server publishing its revocations on Redis, with the photos service registered."""

    chit: ChitServer
    secret: str
    users: int = 0

    @property
    def channel(self) -> str:
        return f"chit:revocations:{self.chit.url}"

    def verifier(self) -> Verifier:
        identity = ServiceIdentity("photos", self.secret, issuer=self.chit.url)
        return Verifier(self.chit.url, "photos", identity=identity, redis_url=REDIS_URL)

    def new_user(self) -> str:
        self.users += 1
        name = f"wake-up-user-{self.users}"
        self.chit.add_user(name, PASSWORD, "--role", "photos:reader")
        return name

    def token(self, username: str) -> str:
        return user_token(self.chit, username, PASSWORD)

    def publish(self, event: dict[str, Any]) -> int:
        """``event`` published on the issuer's channel, as anyone who may publish on that Redis can; how
        many subscribers received it."""
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            return int(client.publish(self.channel, json.dumps(event)))

    def revoke(self, token: str) -> None:
        """RFC 7009, by the client the token was issued to."""
        assert ServiceClient(self.chit, "chit-cli").revoke(token).status_code == 200


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def photos(module_server: ModuleServers) -> Photos:
    if not redis_answers(REDIS_URL):
        message = "Redis is not reachable on 127.0.0.1:6379 (start it: redis-server --daemonize yes)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    chit = module_server("redis-wake-ups", serve_args=["--redis-url", REDIS_URL])
    return Photos(chit, register_manifest(chit, chit.data_dir.parent, "photos", MANIFEST))


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, within: float = WITHIN) -> None:
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"{what} did not happen within {within} s"
        await asyncio.sleep(0.02)


async def following(feed: RevocationFeed) -> None:
    """Until the feed is subscribed on Redis and has caught up after subscribing."""

    async def subscribed() -> bool:
        return feed.connections >= 1 and feed.polls >= 2

    await eventually(subscribed, "the subscription")


def refused(verifier: Verifier, token: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await verifier.verify(token)
        except InvalidTokenError as exc:
            return exc.reason == "token has been revoked"
        return False

    return check


def forged(kind: str, token: str, event_id: int) -> dict[str, Any]:
    """A well-formed event of ``kind`` that would end ``token``, had it come from the feed."""
    claims, header = claims_of(token), jwt.get_unverified_header(token)
    value, not_before = {
        "key": (header["kid"], None),
        "subject": (claims["sub"], int(time.time()) + 3600),
        "client": (claims["client_id"], int(time.time()) + 3600),
        "token": (claims["jti"], None),
        "session": (claims["sid"], None),
    }[kind]
    return {"id": event_id, "kind": kind, "value": value, "not_before": not_before, "expires": claims["exp"] + 86_400}


@pytest.mark.parametrize("kind", ["key", "subject", "client", "token", "session"])
async def test_a_forged_event_on_the_channel_changes_nothing(photos: Photos, kind: str) -> None:
    username = photos.new_user()
    async with photos.verifier() as verifier:
        feed, revocations = verifier.feed, verifier.revocations
        assert feed is not None
        assert revocations is not None
        await following(feed)
        token = photos.token(username)
        subject = claims_of(token)["sub"]
        assert (await verifier.verify(token)).subject == subject
        size, cursor = revocations.size, feed.cursor

        # the next id, and one far past it: each wakes the poller, which finds no such event at the server
        for event_id in (cursor + 1, 2**53):
            assert photos.publish(forged(kind, token, event_id)) == 1
        other = photos.token(photos.new_user())
        await verifier.verify(other)
        photos.revoke(other)  # published after the forgeries: the service reads Redis in order
        await eventually(refused(verifier, other), "the refusal of a token revoked at the server")

        assert (await verifier.verify(token)).subject == subject
        assert (await verifier.verify(photos.token(username))).subject == subject  # the same key, a new token
        assert jwt.get_unverified_header(token)["kid"] not in verifier.jwks.banned
        assert revocations.size == size + 1  # the real event, and only it
        assert cursor < feed.cursor < 2**53  # the cursor moves with the feed only


async def test_a_revocation_at_the_server_still_reaches_the_service_through_redis(photos: Photos) -> None:
    async with photos.verifier() as verifier:
        feed = verifier.feed
        assert feed is not None
        await following(feed)
        username = photos.new_user()
        token, kept = photos.token(username), photos.token(username)
        await verifier.verify(token)
        await verifier.verify(kept)
        cursor, polls = feed.cursor, feed.polls
        photos.revoke(token)
        # well before the next scheduled poll: the message on Redis woke one
        await eventually(refused(verifier, token), "the revoked token's refusal")
        assert feed.polls > polls  # applied from the feed, not from the message
        assert feed.cursor > cursor
        assert (await verifier.verify(kept)).subject == claims_of(kept)["sub"]


async def test_a_flood_of_forged_messages_does_not_make_the_service_poll_without_end(photos: Photos) -> None:
    """After a poll a message asked for in vain, the next waits ``MIN_WAKE_GAP``: a thousand forged messages
    over a second cost the auth server a bounded number of polls, not one each."""
    async with photos.verifier() as verifier:
        feed = verifier.feed
        assert feed is not None
        await following(feed)
        token = photos.token(photos.new_user())
        message = json.dumps(forged("token", token, 2**53))

        def flood() -> None:  # from another thread, while the service's loop runs
            with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
                for _ in range(1000):
                    client.publish(photos.channel, message)
                    time.sleep(0.001)

        polls = feed.polls
        started = time.monotonic()
        await asyncio.to_thread(flood)
        elapsed = time.monotonic() - started
        most = int(elapsed / MIN_WAKE_GAP) + 3  # one a gap, and the polls that ran as the flood began
        assert feed.polls > polls + 3  # the messages did wake it, again and again
        assert feed.polls - polls <= most, f"{feed.polls - polls} polls in {elapsed:.1f} s"
        assert (await verifier.verify(token)).subject == claims_of(token)["sub"]
