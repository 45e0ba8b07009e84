"""The verified-token cache and the revocation check: repeated tokens are cheap, never stale."""

import pytest

from chit import InvalidTokenError
from chit.policy.principals import Principal
from chit.sdk import RevokedTokens, VerifiedTokenCache
from chit.testing import Clock, TestIssuer, make_principal

pytestmark = pytest.mark.anyio
SCOPE = ["image-store:images:read"]


async def test_a_repeated_token_is_answered_from_the_cache(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_a", SCOPE)
    first = await verifier.verify(token)
    decodes = 0
    original = verifier.decoder.decode

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal decodes
        decodes += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    verifier.decoder.decode = counting  # type: ignore[method-assign]
    for _ in range(10):
        assert await verifier.verify(token) is first
    assert decodes == 0


async def test_the_cache_honours_expiry_with_the_same_leeway(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_a", SCOPE, ttl=100)
    await verifier.verify(token)
    clock.advance(100 + 59)
    await verifier.verify(token)
    clock.advance(1)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(token)


async def test_revocation_is_consulted_on_every_request_cached_or_not(issuer: TestIssuer) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    token = issuer.token("usr_a", SCOPE, jti="jti-1", session_id="rtf_1")
    other = issuer.token("usr_a", SCOPE, jti="jti-2", session_id="rtf_2")
    await verifier.verify(token)
    await verifier.verify(other)
    revoked.revoke_token("jti-1")
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)
    await verifier.verify(other)
    revoked.revoke_session("rtf_2")
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(other)
    fresh = issuer.token("usr_a", SCOPE, session_id="rtf_2")
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(fresh)  # never cached: refused on first sight


async def test_revocation_receives_the_jti_and_sid(issuer: TestIssuer) -> None:
    seen: list[tuple[str, str | None]] = []

    class Recorder:
        def is_revoked(self, token_id: str, session_id: str | None) -> bool:
            seen.append((token_id, session_id))
            return False

    verifier = issuer.verifier("image-store", revocation=Recorder())
    await verifier.verify(issuer.token("usr_a", SCOPE, jti="j1", session_id="rtf_9"))
    await verifier.verify(issuer.service_token("tagging", SCOPE, jti="j2"))
    assert seen == [("j1", "rtf_9"), ("j2", None)]


async def test_without_a_cache_every_token_is_verified(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    token = issuer.token("usr_a", SCOPE)
    assert verifier.cache is None
    a = await verifier.verify(token)
    b = await verifier.verify(token)
    assert a == b
    assert a is not b


def principal() -> Principal:
    return make_principal("usr_a", SCOPE)


def test_cache_is_bounded_in_entries_oldest_first() -> None:
    cache = VerifiedTokenCache(max_entries=3)
    for name in "abcd":
        cache.put(name, principal(), 100)
    assert len(cache) == 3
    assert cache.get("a", 0) is None
    assert cache.get("d", 0) is not None


def test_cache_is_bounded_in_bytes() -> None:
    cache = VerifiedTokenCache(max_entries=100, max_bytes=10_000)
    for i in range(10):
        cache.put(str(i) * 3000, principal(), 100)
    assert len(cache) == 3
    cache.put("x" * 20_000, principal(), 100)  # larger than the whole cache: not kept
    assert cache.get("x" * 20_000, 0) is None
    cache.clear()
    assert len(cache) == 0


def test_cache_entries_end_at_their_deadline() -> None:
    cache = VerifiedTokenCache()
    cache.put("t", principal(), 100.0)
    assert cache.get("t", 99.9) is not None
    assert cache.get("t", 100.0) is None
    assert len(cache) == 0


def test_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="room"):
        VerifiedTokenCache(max_entries=0)
