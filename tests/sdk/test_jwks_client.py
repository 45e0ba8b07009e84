"""The verifier's keys: discovery, max-age, unknown-kid refetch with cool-down, last known good keys."""

import asyncio

import httpx
import pytest

from chit import InvalidTokenError, Verifier
from chit.sdk import KeysUnavailableError
from chit.sdk.jwks_client import max_age
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
SCOPE = ["image-store:images:read"]
JWKS = "/.well-known/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"


def jwks_fetches(issuer: TestIssuer) -> int:
    return issuer.requests.count(JWKS)


async def test_first_use_fetches_discovery_then_jwks_once(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    assert issuer.requests == []  # nothing happens at construction
    await asyncio.gather(*(verifier.verify(issuer.token("usr_a", SCOPE)) for _ in range(20)))
    assert issuer.requests == [DISCOVERY, JWKS]


async def test_keys_are_renewed_in_the_background_from_three_quarters_of_max_age(
    issuer: TestIssuer, clock: Clock
) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    clock.advance(224)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    await asyncio.sleep(0.01)
    assert jwks_fetches(issuer) == 1
    clock.advance(1)
    await verifier.verify(issuer.token("usr_a", SCOPE))  # served from the keys in hand at once
    await asyncio.sleep(0.01)  # the background fetch runs
    assert jwks_fetches(issuer) == 2
    clock.advance(224)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    await asyncio.sleep(0.01)
    assert jwks_fetches(issuer) == 2


async def test_max_age_is_capped_at_one_hour(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, jwks_max_age=86_400)
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    clock.advance(2699)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    await asyncio.sleep(0.01)
    assert jwks_fetches(issuer) == 1
    clock.advance(1)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    await asyncio.sleep(0.01)
    assert jwks_fetches(issuer) == 2


def test_max_age_parsing() -> None:
    assert max_age("public, max-age=300") == 300
    assert max_age('max-age="60", must-revalidate') == 60
    assert max_age("no-store") == 0
    assert max_age("public") is None
    assert max_age(None) is None
    assert max_age("max-age=soon") is None


async def test_unknown_kid_refetches_at_most_once_per_cooldown(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    clock.advance(10)
    unpublished = issuer.rotate()
    issuer.retire(unpublished)  # signs, but the JWKS does not show it: every token has an unknown kid
    tokens = [issuer.token("usr_a", SCOPE) for _ in range(30)]
    for token in tokens:
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await verifier.verify(token)
    assert jwks_fetches(issuer) == 2
    clock.advance(9.9)
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(tokens[0])
    assert jwks_fetches(issuer) == 2
    clock.advance(0.1)
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(tokens[0])
    assert jwks_fetches(issuer) == 3


async def test_rotated_key_is_picked_up_on_its_first_token(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    clock.advance(11)
    new = issuer.rotate()  # like `chit keys rotate --now`
    principal = await verifier.verify(issuer.token("usr_b", SCOPE))
    assert principal.subject == "usr_b"
    assert new.kid in verifier.jwks.keys
    assert jwks_fetches(issuer) == 2


async def test_concurrent_requests_with_a_new_kid_share_one_fetch(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, latency=0.05)
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    clock.advance(11)
    issuer.rotate()
    token = issuer.token("usr_a", SCOPE)
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(50)))
    assert {p.subject for p in results} == {"usr_a"}
    assert jwks_fetches(issuer) == 2


async def test_last_known_good_keys_serve_while_the_issuer_is_down(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    issuer.down = True
    for _ in range(5):
        clock.advance(400)  # long past max-age: every round tries a refresh, which fails
        assert (await verifier.verify(issuer.token("usr_a", SCOPE))).subject == "usr_a"
        await verifier.jwks.refresh()
    assert verifier.jwks.last_error is not None
    assert "ConnectError" in verifier.jwks.last_error
    issuer.down = False
    assert await verifier.jwks.refresh()
    assert verifier.jwks.last_error is None


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"<html>maintenance</html>"),
        httpx.Response(200, json={"keys": []}),
        httpx.Response(200, json={"keys": "none"}),
        httpx.Response(200, json=[1, 2, 3]),
        httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}),
        httpx.Response(200, json={"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}),
        httpx.Response(500, json={"keys": []}),
        httpx.Response(404, text="not found"),
        httpx.Response(200, content=b"{" * 600_000),
    ],
    ids=["html", "empty", "keys-not-list", "array", "symmetric", "tiny-rsa", "500", "404", "huge"],
)
async def test_a_bad_jwks_never_replaces_the_keys(
    answer: httpx.Response, issuer: TestIssuer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    good = dict(verifier.jwks.keys)
    original = issuer.handle

    def bad_jwks(request: httpx.Request) -> httpx.Response:
        if request.url.path == JWKS:
            issuer.requests.append(JWKS)
            return answer
        return original(request)

    monkeypatch.setattr(issuer, "handle", bad_jwks)
    clock.advance(400)
    assert not await verifier.jwks.refresh()
    assert dict(verifier.jwks.keys) == good
    assert (await verifier.verify(issuer.token("usr_a", SCOPE))).subject == "usr_a"


async def test_garbage_from_the_whole_server_keeps_the_keys(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    issuer.garbage = True
    clock.advance(400)
    assert not await verifier.jwks.refresh()
    assert (await verifier.verify(issuer.token("usr_a", SCOPE))).subject == "usr_a"


async def test_discovery_of_another_issuer_is_refused(clock: Clock) -> None:
    issuer = TestIssuer("https://issuer.chit.test", clock=clock)
    impostor = TestIssuer("https://evil.example", clock=clock)
    verifier = impostor.verifier("image-store")
    verifier.jwks.issuer = issuer.issuer  # configured for one issuer, the network answers for another
    with pytest.raises(KeysUnavailableError, match=r"not https://issuer\.chit\.test's"):
        await verifier.jwks.refresh_for_unknown_kid("any")


async def test_no_keys_ever_is_keys_unavailable_and_retried_after_a_second(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_a", SCOPE)
    issuer.down = True
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(token)
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(token)
    assert issuer.requests == [DISCOVERY]  # the second call did not try again at once
    issuer.down = False
    clock.advance(1)
    assert (await verifier.verify(token)).subject == "usr_a"


async def test_a_configured_jwks_uri_skips_discovery(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store", jwks_uri=issuer.issuer + JWKS)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    assert issuer.requests == [JWKS]


async def test_a_removed_key_clears_the_verified_token_cache(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    old = issuer.signing_key
    token = issuer.token("usr_a", SCOPE)
    await verifier.verify(token)
    assert verifier.cache is not None
    assert len(verifier.cache) == 1
    issuer.rotate()
    issuer.retire(old)  # a compromised key withdrawn
    clock.advance(400)
    assert await verifier.jwks.refresh()
    assert len(verifier.cache) == 0
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(token)


async def test_keys_of_other_algorithms_in_the_jwks_are_skipped(clock: Clock) -> None:
    issuer = TestIssuer(clock=clock, alg="EdDSA")
    es = issuer.rotate(sign_now=False, alg="ES256")
    rs = issuer.rotate(sign_now=False, alg="RS256")
    verifier = issuer.verifier("image-store", algorithms=["ES256", "RS256"], cache_size=0)
    issuer.start_signing(es)
    await verifier.verify(issuer.token("usr_a", SCOPE))
    assert set(verifier.jwks.keys) == {es.kid, rs.kid}
    issuer.start_signing(issuer.published[-1])  # the EdDSA key: published, but not allowed here
    with pytest.raises(InvalidTokenError, match="algorithm 'EdDSA' is not allowed"):
        await verifier.verify(issuer.token("usr_a", SCOPE))


async def test_aclose_and_async_with(issuer: TestIssuer, clock: Clock) -> None:
    async with issuer.verifier("image-store", cache_size=0) as verifier:
        await verifier.verify(issuer.token("usr_a", SCOPE))
        clock.advance(400)
        verifier.jwks.refresh_if_stale()  # a background fetch under way
    await verifier.aclose()  # idempotent
    assert (await verifier.verify(issuer.token("usr_a", SCOPE))).subject == "usr_a"  # still usable


async def test_cache_hits_alone_renew_the_keys_and_a_withdrawn_key_ends_its_tokens(
    issuer: TestIssuer, clock: Clock
) -> None:
    verifier = issuer.verifier("image-store")
    old = issuer.signing_key
    token = issuer.token("usr_a", SCOPE, ttl=3600)
    await verifier.verify(token)
    issuer.rotate()
    issuer.retire(old)
    clock.advance(300)
    assert (await verifier.verify(token)).subject == "usr_a"  # a cache hit, which starts the renewal
    await asyncio.sleep(0.01)
    assert jwks_fetches(issuer) == 2
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "issuer_url", ["http://auth.example.com", "http://10.0.0.5:8700", "ftp://auth.example.com", "auth.example.com"]
)
def test_keys_are_only_fetched_over_https_or_loopback(issuer_url: str) -> None:
    with pytest.raises(ValueError, match="must be https"):
        Verifier(issuer_url, "image-store")


def test_loopback_http_is_allowed_for_development() -> None:
    for url in ("http://127.0.0.1:8700", "http://localhost:8700", "http://[::1]:8700", "https://auth.example.com"):
        assert Verifier(url, "image-store").issuer == url


async def test_a_jwks_uri_in_clear_text_from_discovery_is_refused(
    issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        issuer, "discovery", lambda: {"issuer": issuer.issuer, "jwks_uri": "http://keys.example.com/jwks.json"}
    )
    verifier = issuer.verifier("image-store")
    with pytest.raises(KeysUnavailableError, match="is not https"):
        await verifier.verify(issuer.token("usr_a", SCOPE))
