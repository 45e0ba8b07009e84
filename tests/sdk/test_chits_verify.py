"""One verifier for both formats: a chit verifies to the same ``Principal`` as a JWT (``kind == "chit"``), with
its root key picked by id from discovery, refetched on an unknown id at most once per 10 s, every block's
revocation id checked, and the verified chit cached until it expires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from chit import Actor, InvalidTokenError, Verifier, attenuate
from chit.errors import KeysUnavailableError
from chit.revocation import RevokedTokens
from chit.testing import Clock, RootKey, TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DISCOVERY = "/.well-known/openid-configuration"
START = 1_800_000_000


@pytest.fixture
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier("image-store")


async def test_a_chit_verifies_to_a_principal_like_a_jwt(issuer: TestIssuer, verifier: Verifier) -> None:
    scope = [READ, "tagging:tags:write"]
    chit = issuer.chit("usr_alice", scope, client_id="photo-app", actors=["tagging", Actor("svc_cart", "cart")])
    jwt = issuer.token("usr_alice", scope, client_id="photo-app", actors=["tagging", Actor("svc_cart", "cart")])
    from_chit, from_jwt = await verifier.verify(chit), await verifier.verify(jwt)
    assert from_chit.kind == "chit"
    assert from_jwt.kind == "jwt"
    for name in ("subject", "client_id", "permissions", "actors", "expires_at", "actor"):
        assert getattr(from_chit, name) == getattr(from_jwt, name), name
    assert from_chit.token == chit
    assert from_jwt.token == jwt
    assert from_chit.expires_at == datetime.fromtimestamp(START + 600, UTC)
    assert len(from_chit.token_id) == 128  # the authority block's revocation id
    assert from_chit.session_id is None
    assert chit not in repr(from_chit)


async def test_the_chit_must_name_this_issuer_and_this_service(issuer: TestIssuer, verifier: Verifier) -> None:
    with pytest.raises(InvalidTokenError, match="another issuer"):
        await verifier.verify(issuer.chit("usr_alice", [READ], issuer="https://evil.test"))
    with pytest.raises(InvalidTokenError, match="not meant for this audience"):
        await verifier.verify(issuer.chit("usr_alice", ["payment:charges:create"]))


async def test_an_expired_chit_is_refused(issuer: TestIssuer, verifier: Verifier, clock: Clock) -> None:
    chit = issuer.chit("usr_alice", [READ], ttl=60)
    await verifier.verify(chit)
    clock.advance(60.5)
    await verifier.verify(chit)  # valid through its last second, cached or not
    clock.advance(0.5)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(chit)


async def test_a_chit_under_another_root_key_is_refused(issuer: TestIssuer, verifier: Verifier) -> None:
    foreign = RootKey.generate(issuer.root_key.id)  # the same id, another key
    with pytest.raises(InvalidTokenError, match="signature is invalid"):
        await verifier.verify(issuer.chit("usr_alice", [READ], key=foreign))


async def test_root_keys_come_from_discovery_only_when_a_chit_arrives(issuer: TestIssuer, verifier: Verifier) -> None:
    await verifier.verify(issuer.token("usr_alice", [READ]))
    assert DISCOVERY in issuer.requests
    discovered = issuer.requests.count(DISCOVERY)
    await asyncio.gather(*(verifier.verify(issuer.chit("usr_alice", [READ])) for _ in range(10)))
    assert issuer.requests.count(DISCOVERY) == discovered + 1  # one fetch for ten chits


async def test_an_unknown_root_key_id_refetches_at_most_once_per_cool_down(
    issuer: TestIssuer, verifier: Verifier, clock: Clock
) -> None:
    await verifier.verify(issuer.chit("usr_alice", [READ]))
    clock.advance(10)
    fetches = verifier.root_keys.fetches
    unknown = RootKey.generate(99)
    for _ in range(5):
        with pytest.raises(InvalidTokenError, match="unknown root key"):
            await verifier.verify(issuer.chit("usr_alice", [READ], key=unknown))
    assert verifier.root_keys.fetches == fetches + 1
    clock.advance(9)
    with pytest.raises(InvalidTokenError, match="unknown root key"):
        await verifier.verify(issuer.chit("usr_alice", [READ], key=unknown))
    assert verifier.root_keys.fetches == fetches + 1
    clock.advance(1)
    with pytest.raises(InvalidTokenError, match="unknown root key"):
        await verifier.verify(issuer.chit("usr_alice", [READ], key=unknown))
    assert verifier.root_keys.fetches == fetches + 2


async def test_a_rotated_root_key_is_picked_up_on_its_first_chit(
    issuer: TestIssuer, verifier: Verifier, clock: Clock
) -> None:
    old = issuer.chit("usr_alice", [READ])
    await verifier.verify(old)
    clock.advance(10)  # past the cool-down of the first fetch
    issuer.rotate_root_key()
    new = issuer.chit("usr_alice", [READ])
    assert (await verifier.verify(new)).kind == "chit"
    assert (await verifier.verify(old)).kind == "chit"  # the old key is still published


async def test_a_withdrawn_root_key_empties_the_cache(issuer: TestIssuer, verifier: Verifier, clock: Clock) -> None:
    old_key = issuer.root_key
    old = issuer.chit("usr_alice", [READ])
    await verifier.verify(old)
    issuer.rotate_root_key()
    issuer.retire_root_key(old_key)
    clock.advance(300)  # the discovery document's max-age: renewed in the background
    await verifier.verify(issuer.chit("usr_alice", [READ]))
    await asyncio.sleep(0.01)
    with pytest.raises(InvalidTokenError, match="unknown root key"):
        await verifier.verify(old)


async def test_no_root_key_yet_is_503_like_no_signing_key(issuer: TestIssuer, verifier: Verifier) -> None:
    chit = issuer.chit("usr_alice", [READ])
    issuer.down = True
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(chit)


async def test_a_discovery_without_root_keys_refuses_every_chit(issuer: TestIssuer, verifier: Verifier) -> None:
    chit = issuer.chit("usr_alice", [READ])
    issuer.root_keys = []
    with pytest.raises(InvalidTokenError, match="unknown root key"):
        await verifier.verify(chit)


async def test_revoking_the_authority_id_revokes_every_attenuated_chit(issuer: TestIssuer) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    parent = issuer.chit("usr_alice", [READ, "image-store:images:delete"])
    principal = await verifier.verify(parent)
    child = attenuate(parent, operations=[READ], now=issuer.clock())
    grandchild = attenuate(child, resource="img-7", now=issuer.clock())
    assert (await verifier.verify(grandchild)).token_id == principal.token_id  # cached from now on
    revoked.revoke_token(principal.token_id)
    for token in (parent, child, grandchild):
        with pytest.raises(InvalidTokenError, match="revoked"):
            await verifier.verify(token)


async def test_revoking_an_appended_block_revokes_that_branch_only(issuer: TestIssuer) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    parent = issuer.chit("usr_alice", [READ])
    await verifier.verify(parent)
    left = attenuate(parent, resource="img-7", now=issuer.clock())
    right = attenuate(parent, resource="img-8", now=issuer.clock())
    left_principal = await verifier.verify(left)
    assert left_principal.chit is not None
    revoked.revoke_token(left_principal.chit.revocation_ids[1])
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(left)
    assert (await verifier.verify(right)).kind == "chit"
    assert (await verifier.verify(parent)).kind == "chit"


async def test_a_verified_chit_is_cached_until_it_expires(issuer: TestIssuer, verifier: Verifier, clock: Clock) -> None:
    chit = issuer.chit("usr_alice", [READ], ttl=120)
    first = await verifier.verify(chit)
    assert verifier.cache is not None
    assert len(verifier.cache) == 1
    assert await verifier.verify(chit) is first
    clock.advance(121)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(chit)
    assert len(verifier.cache) == 0


async def test_the_cache_is_keyed_on_the_whole_token(issuer: TestIssuer, verifier: Verifier) -> None:
    chit = issuer.chit("usr_alice", [READ])
    await verifier.verify(chit)
    flipped = chit[:-8] + ("A" if chit[-8] != "A" else "B") + chit[-7:]
    with pytest.raises(InvalidTokenError):
        await verifier.verify(flipped)


async def test_short_or_dotted_garbage_still_gets_the_jwt_answers(verifier: Verifier) -> None:
    with pytest.raises(InvalidTokenError, match="not a compact JWS"):
        await verifier.verify("abc")
    with pytest.raises(InvalidTokenError, match="not a chit"):
        await verifier.verify("A" * 200)


async def test_the_last_good_root_keys_serve_while_the_issuer_answers_garbage(
    issuer: TestIssuer, verifier: Verifier, clock: Clock
) -> None:
    await verifier.verify(issuer.chit("usr_alice", [READ]))
    issuer.garbage = True
    clock.advance(300)  # the keys' renewal is due, and fails
    assert (await verifier.verify(issuer.chit("usr_bob", [READ]))).subject == "usr_bob"
    await asyncio.sleep(0.01)
    assert verifier.root_keys.last_error is not None
    assert (await verifier.verify(issuer.chit("usr_carol", [READ]))).subject == "usr_carol"
