"""Calling another service for a user: ServiceIdentity's token exchange (RFC 8693) and deferred delegation."""

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

from chit import Actor, Principal
from chit.sdk import ExchangedToken, TokenRequestError, authenticated
from chit.sdk.identity import ServiceIdentity
from chit.testing import Clock, TestIssuer, make_principal

pytestmark = pytest.mark.anyio
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED = "urn:chit:token-type:deferred-delegation"
IMAGES_READ = "image-store:images:read"
TAGS_READ = "tagging:tags:read"
TAGS_WRITE = "tagging:tags:write"
USER_SCOPE = [IMAGES_READ, TAGS_READ, TAGS_WRITE]


def add_image_store(issuer: TestIssuer) -> None:
    """The exchanging service, as registered from a manifest with an ``[on_behalf]`` table."""
    issuer.add_client("image-store", "s3cret", [], on_behalf=[TAGS_READ, TAGS_WRITE], deferred=[TAGS_WRITE])


@pytest.fixture
def issuer(issuer: TestIssuer) -> TestIssuer:
    add_image_store(issuer)
    return issuer


@pytest.fixture
def slow_issuer(clock: Clock) -> TestIssuer:
    """An issuer that takes 50 ms to answer, so that concurrent callers overlap."""
    issuer = TestIssuer(clock=clock, latency=0.05)
    add_image_store(issuer)
    return issuer


@pytest.fixture
def identity(issuer: TestIssuer) -> ServiceIdentity:
    return issuer.identity("image-store", "s3cret")


def user_token(issuer: TestIssuer, subject: str = "usr_alice", **options: object) -> str:
    """A user's token as image-store receives it (its ``aud`` names image-store and tagging)."""
    return issuer.token(subject, USER_SCOPE, client_id="web", **options)  # type: ignore[arg-type]


def exchanges(issuer: TestIssuer) -> list[dict[str, str]]:
    return [form for form in issuer.token_forms if form.get("grant_type") == EXCHANGE]


def downstream(seen: list[str], refuse: set[str] | None = None, *, always: bool = False) -> httpx.MockTransport:
    """A service that records each bearer token it gets and refuses (401 invalid_token) those in ``refuse``."""

    def handle(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        seen.append(token)
        if always or (refuse is not None and token in refuse):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle)


async def as_tagging(issuer: TestIssuer, token: str) -> Principal:
    return await issuer.verifier("tagging").verify(token)


# --- exchange: the wire ---------------------------------------------------------------------------------


async def test_exchange_sends_the_rfc_8693_form(issuer: TestIssuer, identity: ServiceIdentity, clock: Clock) -> None:
    subject = user_token(issuer)
    result = await identity.exchange(subject, audience="tagging", scope=[TAGS_WRITE])
    assert exchanges(issuer) == [
        {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN,
            "audience": "tagging",
            "scope": TAGS_WRITE,
        }
    ]  # client_secret_basic: no credentials in the form
    assert result.issued_token_type == ACCESS_TOKEN
    assert result.scope == (TAGS_WRITE,)
    assert result.expires_at == clock() + 600
    principal = await as_tagging(issuer, result.access_token)
    assert principal.subject == "usr_alice"
    assert principal.client_id == "image-store"
    assert principal.actors == (Actor("image-store", "image-store"),)
    assert principal.permissions == frozenset({TAGS_WRITE})
    assert result.access_token not in repr(result)
    assert identity.exchanges == 1
    assert identity.requests == 0  # an exchange needs no token of the service's own


async def test_optional_parameters_are_left_out_and_client_secret_post_works(issuer: TestIssuer) -> None:
    identity = issuer.identity("image-store", "s3cret", auth_method="client_secret_post")
    subject = user_token(issuer)
    result = identity.exchange_sync(subject)
    assert exchanges(issuer) == [
        {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN,
            "client_id": "image-store",
            "client_secret": "s3cret",
        }
    ]
    assert result.scope == (TAGS_READ, TAGS_WRITE)  # what the user holds within [on_behalf]
    principal = await as_tagging(issuer, result.access_token)
    assert principal.permissions == frozenset({TAGS_READ, TAGS_WRITE})


async def test_re_exchange_nests_the_earlier_actor(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    subject = issuer.delegated_token("usr_alice", USER_SCOPE, ["ingest"])
    result = await identity.exchange(subject, audience="tagging")
    principal = await as_tagging(issuer, result.access_token)
    assert [actor.name for actor in principal.actors] == ["image-store", "ingest"]
    assert principal.subject == "usr_alice"


async def test_the_exchanged_token_never_outlives_the_user_s(
    issuer: TestIssuer, identity: ServiceIdentity, clock: Clock
) -> None:
    result = await identity.exchange(user_token(issuer, ttl=90), audience="tagging")
    assert result.expires_at == clock() + 90


async def test_refusals_carry_the_rfc_error_and_never_the_token(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    subject = user_token(issuer)
    issuer.add_client("plain", "pw", [TAGS_READ])
    cases = [
        (issuer.identity("image-store", "wrong"), subject, {}, "invalid_client", 401),
        (issuer.identity("plain", "pw"), subject, {}, "unauthorized_client", 400),
        (identity, subject, {"scope": [IMAGES_READ]}, "invalid_scope", 400),
        (identity, subject, {"audience": "billing"}, "invalid_target", 400),
        (identity, issuer.token("usr_alice", [TAGS_WRITE]), {}, "invalid_request", 400),  # aud lacks image-store
        (identity, user_token(issuer, ttl=-1), {}, "invalid_request", 400),
        (identity, "not-a-token", {}, "invalid_request", 400),
    ]
    for who, token, options, error, status in cases:
        with pytest.raises(TokenRequestError) as caught:
            await who.exchange(token, **options)  # type: ignore[arg-type]
        assert (caught.value.error, caught.value.status_code) == (error, status), error
        assert token not in str(caught.value)
        assert "s3cret" not in str(caught.value)


async def test_an_unreachable_issuer_is_temporarily_unavailable(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    issuer.down = True
    with pytest.raises(TokenRequestError) as caught:
        await identity.exchange(user_token(issuer))
    assert (caught.value.error, caught.value.status_code) == ("temporarily_unavailable", 503)


async def test_an_answer_of_another_shape_is_refused(identity: ServiceIdentity) -> None:
    def answer(body: dict[str, object]) -> ServiceIdentity:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
        return ServiceIdentity(
            "image-store",
            "s3cret",
            token_url="https://issuer.test/token",
            http_client=httpx.AsyncClient(transport=transport),
        )

    bearer = {"access_token": "t", "token_type": "Bearer", "expires_in": 60}
    for body in (
        bearer,  # no issued_token_type (RFC 8693 §2.2.1 requires it)
        {**bearer, "issued_token_type": ACCESS_TOKEN, "token_type": "N_A"},
    ):
        with pytest.raises(TokenRequestError, match="token endpoint answered"):
            await answer(body).exchange("user-token")
    with pytest.raises(TokenRequestError, match="another token type"):
        await answer({**bearer, "token_type": "N_A", "issued_token_type": ACCESS_TOKEN}).defer(token="user-token")


def test_scope_is_a_list_not_a_string(identity: ServiceIdentity) -> None:
    with pytest.raises(TypeError, match="scope"):
        identity.for_user("tagging", scope=TAGS_WRITE)
    with pytest.raises(TypeError, match="scope"):
        identity.exchange_sync("t", scope=TAGS_WRITE)


# --- for_user -------------------------------------------------------------------------------------------


async def test_for_user_sends_an_exchanged_token_and_keeps_it(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    alice, bob = user_token(issuer, "usr_alice"), user_token(issuer, "usr_bob")
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen)) as client:
        with authenticated(make_principal("usr_alice"), alice):
            for _ in range(3):
                response = await client.post("http://tagging/tags", json={}, auth=identity.for_user("tagging"))
                assert response.status_code == 200
        assert len(set(seen)) == 1
        assert len(exchanges(issuer)) == 1
        principal = await as_tagging(issuer, seen[0])
        assert (principal.subject, principal.actor) == ("usr_alice", Actor("image-store", "image-store"))

        with authenticated(make_principal("usr_bob"), bob):
            await client.post("http://tagging/tags", auth=identity.for_user("tagging"))
        assert (await as_tagging(issuer, seen[-1])).subject == "usr_bob"
        assert len(exchanges(issuer)) == 2

        await client.get("http://tagging/tags", auth=identity.for_user("tagging", token=alice))  # alice's again
        assert seen[-1] == seen[0]
        await client.get("http://tagging/tags", auth=identity.for_user("tagging", token=alice, scope=[TAGS_READ]))
        assert (await as_tagging(issuer, seen[-1])).permissions == frozenset({TAGS_READ})
        await client.get("http://tagging/tags", auth=identity.for_user("tagging", token=alice, scope=[TAGS_READ]))
        assert seen[-1] == seen[-2]
    assert [form.get("audience") for form in exchanges(issuer)] == ["tagging", "tagging", "tagging"]
    assert [form.get("scope") for form in exchanges(issuer)] == [None, None, TAGS_READ]
    assert [form["subject_token"] for form in exchanges(issuer)] == [alice, bob, alice]


async def test_for_user_outside_a_request_is_a_runtime_error(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    auth = identity.for_user("tagging")  # made up front: it reads the request's token at each call
    async with httpx.AsyncClient(transport=downstream([])) as client:
        with pytest.raises(RuntimeError, match="no request token to exchange"):
            await client.get("http://tagging/tags", auth=auth)
        with authenticated(make_principal("usr_alice"), user_token(issuer)):
            assert (await client.get("http://tagging/tags", auth=auth)).status_code == 200
    assert len(exchanges(issuer)) == 1


async def test_for_user_renews_before_expiry(issuer: TestIssuer, identity: ServiceIdentity, clock: Clock) -> None:
    auth = identity.for_user("tagging", token=user_token(issuer, ttl=3600))
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen), auth=auth) as client:
        await client.get("http://tagging/tags")
        clock.advance(539)  # refresh_before 60 s of a 600 s token
        await client.get("http://tagging/tags")
        assert seen[1] == seen[0]
        clock.advance(1)
        await client.get("http://tagging/tags")
    assert seen[2] != seen[0]
    assert len(exchanges(issuer)) == 2


async def test_for_user_a_short_lived_token_is_renewed_at_half_its_life(
    issuer: TestIssuer, identity: ServiceIdentity, clock: Clock
) -> None:
    auth = identity.for_user("tagging", token=user_token(issuer, ttl=40))
    async with httpx.AsyncClient(transport=downstream([]), auth=auth) as client:
        await client.get("http://tagging/tags")
        clock.advance(19)
        await client.get("http://tagging/tags")
        assert len(exchanges(issuer)) == 1
        clock.advance(1)
        await client.get("http://tagging/tags")
    assert len(exchanges(issuer)) == 2


async def test_for_user_one_exchange_for_concurrent_callers(slow_issuer: TestIssuer) -> None:
    identity = slow_issuer.identity("image-store", "s3cret")
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen)) as client:
        with authenticated(make_principal("usr_alice"), user_token(slow_issuer)):
            answers = await asyncio.gather(
                *(client.get("http://tagging/tags", auth=identity.for_user("tagging")) for _ in range(20))
            )
    assert [answer.status_code for answer in answers] == [200] * 20
    assert len(seen) == 20
    assert len(set(seen)) == 1
    assert len(exchanges(slow_issuer)) == 1


def test_for_user_one_exchange_for_threads(slow_issuer: TestIssuer) -> None:
    identity = slow_issuer.identity("image-store", "s3cret")
    auth = identity.for_user("tagging", token=user_token(slow_issuer))
    seen: list[str] = []
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(transport=downstream(seen)) as client:
            statuses.append(client.get("http://tagging/tags", auth=auth).status_code)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20
    assert len(set(seen)) == 1
    assert len(exchanges(slow_issuer)) == 1


async def test_for_user_an_invalid_token_answer_gets_one_retry(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    subject = user_token(issuer)
    stale = (await identity.exchange(subject, audience="tagging")).access_token
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen)) as client:
        auth = identity.for_user("tagging", token=subject)
        await client.get("http://tagging/tags", auth=auth)
    kept = seen[0]
    seen.clear()
    async with httpx.AsyncClient(transport=downstream(seen, refuse={kept, stale})) as client:
        response = await client.post("http://tagging/tags", content=b"payload", auth=auth)
    assert response.status_code == 200
    assert seen[0] == kept
    assert seen[1] not in (kept, stale)
    assert len(seen) == 2
    seen.clear()
    with httpx.Client(transport=downstream(seen, always=True)) as sync:
        assert sync.post("http://tagging/tags", content=b"payload", auth=auth).status_code == 401
    assert len(seen) == 2  # exactly one retry, then the refusal is the caller's


class StreamingRefusal(httpx.AsyncBaseTransport):
    """Reads a streamed body as a network transport does (it cannot be sent again) and answers 401."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.headers["authorization"])
        async for _ in request.stream:  # type: ignore[union-attr]
            pass
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def test_for_user_a_one_shot_body_is_not_sent_twice(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"payload"

    seen: list[str] = []
    async with httpx.AsyncClient(transport=StreamingRefusal(seen)) as client:
        auth = identity.for_user("tagging", token=user_token(issuer))
        assert (await client.post("http://tagging/tags", content=body(), auth=auth)).status_code == 401
    assert len(seen) == 1


def test_for_user_in_a_sync_client(issuer: TestIssuer) -> None:
    identity = issuer.identity("image-store", "s3cret")
    seen: list[str] = []
    with httpx.Client(transport=downstream(seen)) as client, authenticated(make_principal(), user_token(issuer)):
        client.get("http://tagging/tags", auth=identity.for_user("tagging"))
        client.get("http://tagging/tags", auth=identity.for_user("tagging"))
    assert len(set(seen)) == 1
    assert len(exchanges(issuer)) == 1


async def test_for_user_a_refused_exchange_raises_with_the_rfc_error(
    issuer: TestIssuer, identity: ServiceIdentity
) -> None:
    seen: list[str] = []
    auth = identity.for_user("tagging", token=user_token(issuer), scope=[IMAGES_READ])
    async with httpx.AsyncClient(transport=downstream(seen)) as client:
        with pytest.raises(TokenRequestError) as caught:
            await client.get("http://tagging/tags", auth=auth)
    assert caught.value.error == "invalid_scope"
    assert seen == []  # nothing reached the service


async def test_the_cache_is_bounded_and_drops_expired_tokens_first(issuer: TestIssuer, clock: Clock) -> None:
    identity = issuer.identity("image-store", "s3cret", max_delegated_tokens=3)
    short = user_token(issuer, "usr_short", ttl=50)
    long_a, long_b, long_c, long_d = (
        user_token(issuer, name, ttl=3600) for name in ("usr_a", "usr_b", "usr_c", "usr_d")
    )
    async with httpx.AsyncClient(transport=downstream([])) as client:

        async def call(token: str) -> None:
            await client.get("http://tagging/tags", auth=identity.for_user("tagging", token=token))

        for token in (long_a, short, long_b):
            await call(token)
        clock.advance(60)  # the short one has expired; long_a is still the least recently used
        await call(long_c)
        await call(long_a)
        assert len(exchanges(issuer)) == 4  # long_a was kept
        await call(long_d)  # full of live tokens: the least recently used, long_b, goes
        await call(long_c)
        await call(long_b)
    assert [form["subject_token"] for form in exchanges(issuer)][4:] == [long_d, long_b]


# --- deferred delegation --------------------------------------------------------------------------------


async def test_defer_then_with_delegation_round_trip(
    issuer: TestIssuer, identity: ServiceIdentity, clock: Clock
) -> None:
    subject = user_token(issuer)
    with authenticated(make_principal("usr_alice"), subject):
        handle = await identity.defer(scope=[TAGS_WRITE], job_id="resize-42", expires_in=3600)
    assert handle.startswith("chit_dd_")
    assert exchanges(issuer)[-1] == {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN,
        "scope": TAGS_WRITE,
        "requested_token_type": DEFERRED,
        "job_id": "resize-42",
        "expires_in": "3600",
    }

    seen: list[str] = []
    auth = identity.with_delegation(handle, audience="tagging")  # later, in a job: no request around
    async with httpx.AsyncClient(transport=downstream(seen), auth=auth) as client:
        await client.post("http://tagging/tags", json={})
        await client.post("http://tagging/tags", json={})
        assert exchanges(issuer)[-1] == {
            "grant_type": EXCHANGE,
            "subject_token": handle,
            "subject_token_type": DEFERRED,
            "audience": "tagging",
        }
        assert len(exchanges(issuer)) == 2  # one creation, one redemption for both calls
        principal = await as_tagging(issuer, seen[0])
        assert principal.subject == "usr_alice"
        assert principal.actor == Actor("image-store", "image-store")
        assert principal.permissions == frozenset({TAGS_WRITE})

        clock.advance(540)  # the redeemed token is renewed ahead of expiry, from the same handle
        await client.post("http://tagging/tags", json={})
        assert seen[-1] != seen[0]
        assert len(exchanges(issuer)) == 3

        clock.advance(600)
        issuer.revoke_delegation(handle)
        with pytest.raises(TokenRequestError) as caught:
            await client.post("http://tagging/tags", json={})
    assert caught.value.error == "invalid_request"
    assert handle not in str(caught.value)


async def test_the_redeemed_token_never_outlives_the_handle(
    issuer: TestIssuer, identity: ServiceIdentity, clock: Clock
) -> None:
    handle = await identity.defer(token=user_token(issuer), expires_in=100)
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen), auth=identity.with_delegation(handle)) as client:
        await client.get("http://tagging/tags")
    assert (await as_tagging(issuer, seen[0])).expires_at.timestamp() == clock() + 100


async def test_with_delegation_one_redemption_for_concurrent_callers(slow_issuer: TestIssuer) -> None:
    identity = slow_issuer.identity("image-store", "s3cret")
    handle = await identity.defer(token=user_token(slow_issuer))
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(seen)) as client:
        await asyncio.gather(
            *(client.get("http://tagging/tags", auth=identity.with_delegation(handle)) for _ in range(20))
        )
    assert len(seen) == 20
    assert len(set(seen)) == 1
    assert [form["subject_token_type"] for form in exchanges(slow_issuer)] == [ACCESS_TOKEN, DEFERRED]


def test_with_delegation_in_threads_and_a_retry(slow_issuer: TestIssuer) -> None:
    identity = slow_issuer.identity("image-store", "s3cret")
    handle = identity.defer_sync(token=user_token(slow_issuer), scope=[TAGS_WRITE])
    auth = identity.with_delegation(handle)
    seen: list[str] = []

    def call() -> None:
        with httpx.Client(transport=downstream(seen)) as client:
            client.get("http://tagging/tags", auth=auth)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 20
    assert len(set(seen)) == 1
    assert len(exchanges(slow_issuer)) == 2
    with httpx.Client(transport=downstream(seen, refuse={seen[0]})) as client:
        assert client.post("http://tagging/tags", content=b"x", auth=auth).status_code == 200
    assert seen[-1] != seen[0]
    assert len(exchanges(slow_issuer)) == 3


async def test_defer_needs_a_user_token_and_the_deferred_right(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    with pytest.raises(RuntimeError, match="no request token"):
        await identity.defer()
    with pytest.raises(ValueError, match="expires_in"):
        await identity.defer(token="t", expires_in=0)
    subject = user_token(issuer)
    with pytest.raises(TokenRequestError) as caught:
        await identity.defer(token=subject, scope=[TAGS_READ])  # on_behalf, but not deferred
    assert caught.value.error == "invalid_scope"
    issuer.add_client("no-later", "pw", [], on_behalf=[TAGS_READ])
    with pytest.raises(TokenRequestError) as caught:
        await issuer.identity("no-later", "pw").defer(token=issuer.token("usr_alice", ["no-later:x:y"]))
    assert caught.value.error == "invalid_scope"  # may exchange, yet may defer nothing


async def test_a_handle_is_redeemed_only_by_its_service(issuer: TestIssuer, identity: ServiceIdentity) -> None:
    handle = await identity.defer(token=user_token(issuer))
    issuer.add_client("thumbnailer", "pw", [], on_behalf=[TAGS_WRITE])
    other = issuer.identity("thumbnailer", "pw")
    with pytest.raises(TokenRequestError) as caught:
        await other.exchange(handle, subject_token_type=DEFERRED)
    assert caught.value.error == "invalid_request"
    assert isinstance(await identity.exchange(handle, subject_token_type=DEFERRED), ExchangedToken)
