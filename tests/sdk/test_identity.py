"""ServiceIdentity and ForwardedToken: outbound calls with the service's own token or the caller's."""

import asyncio
import threading

import httpx
import pytest

from chit import ServiceIdentity
from chit.sdk import ForwardedToken, TokenRequestError, authenticated
from chit.testing import Clock, TestIssuer, make_principal

pytestmark = pytest.mark.anyio
SCOPE = ["image-store:images:read"]


@pytest.fixture
def issuer(issuer: TestIssuer) -> TestIssuer:
    """The shared issuer, with the client these tests authenticate as."""
    issuer.add_client("tagging", "s3cret:with&odd=chars", SCOPE)
    return issuer


def token_requests(issuer: TestIssuer) -> int:
    return issuer.requests.count("/oauth2/token")


async def test_obtains_and_caches_its_token(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    first = await identity.token()
    assert await identity.token() == first
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(first)
    assert principal.client_id == "tagging"
    assert principal.permissions == frozenset(SCOPE)
    assert token_requests(issuer) == 1


async def test_client_secret_post_and_a_narrower_scope(issuer: TestIssuer) -> None:
    issuer.add_client("billing", "pw", ["billing:invoices:read", "billing:invoices:write"])
    identity = issuer.identity("billing", "pw", auth_method="client_secret_post", scope=["billing:invoices:read"])
    verifier = issuer.verifier("billing")
    principal = await verifier.verify(await identity.token())
    assert principal.permissions == frozenset({"billing:invoices:read"})


async def test_renews_before_expiry(issuer: TestIssuer, clock: Clock) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars", refresh_before=60)
    first = await identity.token()
    clock.advance(539)
    assert await identity.token() == first
    clock.advance(1)
    second = await identity.token()
    assert second != first
    assert token_requests(issuer) == 2


async def test_a_short_lived_token_is_renewed_at_half_its_life(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, access_token_ttl=20)
    issuer.add_client("tagging", "pw", SCOPE)
    identity = issuer.identity("tagging", "pw", refresh_before=60)
    first = await identity.token()
    clock.advance(9)
    assert await identity.token() == first
    clock.advance(1)
    assert await identity.token() != first


async def test_single_flight_under_concurrency(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, latency=0.05)
    issuer.add_client("tagging", "pw", SCOPE)
    identity = issuer.identity("tagging", "pw")
    tokens = await asyncio.gather(*(identity.token() for _ in range(100)))
    assert len(set(tokens)) == 1
    assert token_requests(issuer) == 1
    clock.advance(600)
    tokens = await asyncio.gather(*(identity.token() for _ in range(100)))
    assert len(set(tokens)) == 1
    assert token_requests(issuer) == 2


def test_single_flight_across_threads(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, latency=0.05)
    issuer.add_client("tagging", "pw", SCOPE)
    identity = issuer.identity("tagging", "pw")
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(identity.sync_token())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 20
    assert len(set(tokens)) == 1
    assert token_requests(issuer) == 1


async def test_a_failed_renewal_keeps_the_token_that_still_works(issuer: TestIssuer, clock: Clock) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    first = await identity.token()
    clock.advance(560)
    issuer.down = True
    assert await identity.token() == first
    assert await identity.token() == first  # no second attempt within the retry pause
    assert token_requests(issuer) == 2
    clock.advance(40)
    with pytest.raises(TokenRequestError) as caught:
        await identity.token()  # expired and still no auth server
    assert caught.value.error == "temporarily_unavailable"
    issuer.down = False
    assert await identity.token() != first


async def test_refusals_carry_the_rfc_error(issuer: TestIssuer) -> None:
    with pytest.raises(TokenRequestError) as caught:
        await issuer.identity("tagging", "wrong").token()
    assert caught.value.error == "invalid_client"
    assert caught.value.status_code == 401
    with pytest.raises(TokenRequestError) as caught:
        await issuer.identity("tagging", "s3cret:with&odd=chars", scope=["image-store:images:delete"]).token()
    assert caught.value.error == "invalid_scope"


def test_the_secret_never_shows_in_repr(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    assert "s3cret" not in repr(identity)


def test_needs_an_issuer_or_a_token_url() -> None:
    with pytest.raises(TypeError, match="issuer"):
        ServiceIdentity("tagging", "pw")


def downstream(issuer: TestIssuer, seen: list[str], refuse: set[str] | None = None) -> httpx.MockTransport:
    """A service that records the bearer token it got and refuses the ones in ``refuse``."""

    def handle(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        seen.append(token)
        if refuse is not None and token in refuse:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle)


async def test_plugs_into_httpx_as_auth(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(issuer, seen), auth=identity) as client:
        for _ in range(3):
            assert (await client.get("http://image-store/images/1")).status_code == 200
    assert len(set(seen)) == 1
    assert seen[0] == await identity.token()


def test_plugs_into_a_sync_httpx_client(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    seen: list[str] = []
    with httpx.Client(transport=downstream(issuer, seen), auth=identity) as client:
        assert client.get("http://image-store/images/1").status_code == 200
    assert seen == [identity.sync_token()]


async def test_an_invalid_token_answer_gets_one_retry_with_a_new_token(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    stale = await identity.token()
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(issuer, seen, refuse={stale}), auth=identity) as client:
        response = await client.post("http://image-store/images", content=b"payload")
    assert response.status_code == 200
    assert seen[0] == stale
    assert seen[1] != stale
    assert len(seen) == 2


async def test_forwarded_token_sends_the_current_request_s_token(issuer: TestIssuer) -> None:
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(issuer, seen), auth=ForwardedToken()) as client:
        with authenticated(make_principal("usr_a"), "the-callers-token"):
            await client.get("http://tagging/tags")
        with pytest.raises(RuntimeError, match="no request token"):
            await client.get("http://tagging/tags")
    assert seen == ["the-callers-token"]


async def test_forwarded_token_falls_back_to_the_service_identity(issuer: TestIssuer) -> None:
    identity = issuer.identity("tagging", "s3cret:with&odd=chars")
    seen: list[str] = []
    async with httpx.AsyncClient(transport=downstream(issuer, seen), auth=ForwardedToken(fallback=identity)) as client:
        await client.get("http://tagging/tags")
        with authenticated(make_principal("usr_a"), "the-callers-token"):
            await client.get("http://tagging/tags")
    assert seen == [await identity.token(), "the-callers-token"]
    with httpx.Client(transport=downstream(issuer, seen), auth=ForwardedToken(fallback=identity)) as sync:
        sync.get("http://tagging/tags")
    assert seen[-1] == identity.sync_token()
