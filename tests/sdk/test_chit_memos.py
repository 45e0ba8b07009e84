"""What the chit path remembers never changes what it decides: blocks read once per exact bytes *and* symbol
table (first- or third-party), a request bound once per route and second, a decision once per facts and
second, a verified chit cached with every revocation id still checked on every hit; and each memo bounded."""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from typing import Any

import biscuit_auth
import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from chit import InsufficientScopeError, InvalidTokenError, Principal, Verifier, attenuate
from chit.core import chit_authorizer as ca
from chit.core import chit_blocks
from chit.core.chit_authorizer import ChitRequest
from chit.core.chit_blocks import Predicate, forget_blocks, read_blocks
from chit.revocation import RevokedTokens
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
WRITE = "image-store:images:write"
DELETE = "image-store:images:delete"
READ_ANY = "image-store:images:read-any"
IMAGES = {"img-7": "usr_alice", "img-8": "usr_alice"}
START = 1_800_000_000  # the clock fixture's start: 2027-01-15T08:00:00Z
ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])


@pytest.fixture(autouse=True)
def no_blocks_remembered() -> Iterator[None]:
    """Every test starts and ends with the block memo empty (it is process-wide)."""
    forget_blocks()
    yield
    forget_blocks()


@pytest.fixture
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier("image-store")


@pytest.fixture
def keys(issuer: TestIssuer) -> list[str]:
    return [issuer.root_key.public_key]


def build_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
        principal.require_owner(IMAGES[image_id], unless=READ_ANY, resource=image_id)
        return {"read": image_id}

    @app.delete("/images/{image_id}")
    async def delete_image(image_id: str, principal: Principal = Security(verifier, scopes=[DELETE])) -> dict[str, str]:
        principal.require_owner(IMAGES[image_id], resource=image_id)
        return {"deleted": image_id}

    @app.put("/images/{image_id}")
    async def write_image(image_id: str, principal: Principal = Depends(verifier)) -> dict[str, str]:
        principal.require(WRITE, resource=image_id)  # the permission is decided in the body
        return {"written": image_id}

    return app


@pytest.fixture
async def http(verifier: Verifier) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
        yield client


@pytest.fixture
async def chit(issuer: TestIssuer, verifier: Verifier) -> str:
    token = issuer.chit("usr_alice", [READ, WRITE, DELETE])
    await verifier.verify(token)
    return token


async def status(http: httpx.AsyncClient, method: str, path: str, token: str) -> int:
    return (await http.request(method, path, headers={"Authorization": f"Bearer {token}"})).status_code


def ordered(items: list[Any], reverse: bool) -> list[Any]:
    return items[::-1] if reverse else items


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def last_block_bytes(token: str) -> bytes:
    """The bytes of the last appended block (inside its signed block), as ``read_blocks`` keys them."""
    data = raw(token)
    signed = [(start, end) for number, start, end in chit_blocks._fields(data, 0, len(data)) if number == 3]
    start, end, _ = chit_blocks._signed_block(data, *signed[-1])
    return data[start:end]


def printed(token: str, key: str, block: int) -> str:
    return str(biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(key)).block_source(block))


# --- protocol buffers by hand: tokens that only read_blocks sees (no signature is checked there) ---------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def message(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def number_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def block(symbols: tuple[str, ...], facts: tuple[tuple[int, int], ...] = ()) -> bytes:
    """A Block: its own symbols, and facts ``name(string)`` by symbol index."""
    body = b"".join(message(1, symbol.encode()) for symbol in symbols) + number_field(3, 3)
    for name, term in facts:
        body += message(4, message(1, number_field(1, name) + message(2, number_field(3, term))))
    return body


def token_bytes(*blocks: tuple[bytes, bool]) -> bytes:
    """A Biscuit of these (block, third party) pairs, the first being the authority block."""
    out = b""
    for index, (data, third_party) in enumerate(blocks):
        signed = message(1, data) + message(2, b"") + message(3, b"")
        if third_party:
            signed += message(4, b"")
        out += message(2 if index == 0 else 3, signed)
    return out


# --- 1. the block memo is keyed on the symbol table too --------------------------------------------------


@ORDERS
def test_identical_block_bytes_under_two_symbol_tables_read_as_their_own_token(
    issuer: TestIssuer, keys: list[str], reverse: bool
) -> None:
    # the subjects take the same place in both authority tables; each appended fact names its token's
    # subject by that place, so the two appended blocks are the same bytes meaning different things
    first = attenuate(issuer.chit("img-7", [READ]), datalog='tag("img-7");', now=issuer.clock(), public_keys=keys)
    second = attenuate(issuer.chit("img-8", [READ]), datalog='tag("img-8");', now=issuer.clock(), public_keys=keys)
    assert last_block_bytes(first) == last_block_bytes(second)
    tokens = [(first, "img-7"), (second, "img-8")]
    for token, image in ordered(tokens, reverse):
        for _ in range(2):  # read afresh, then from the memo
            assert read_blocks(raw(token))[1].facts == (Predicate("tag", (image,)),)
        assert printed(token, keys[0], 1).strip() == f'tag("{image}");'


@ORDERS
async def test_identical_restriction_bytes_decide_for_their_own_token(
    issuer: TestIssuer, verifier: Verifier, keys: list[str], reverse: bool
) -> None:
    first = attenuate(issuer.chit("img-7", [READ]), resource="img-7", now=issuer.clock(), public_keys=keys)
    second = attenuate(issuer.chit("img-8", [READ]), resource="img-8", now=issuer.clock(), public_keys=keys)
    assert last_block_bytes(first) == last_block_bytes(second)
    cases = [(first, "img-7", "img-8"), (second, "img-8", "img-7")]
    for token, mine, other in ordered(cases, reverse):
        principal = verifier.authorize(await verifier.verify(token), [READ], method="GET", path="/images")
        assert principal.subject == mine
        principal.require(READ, resource=mine)
        with pytest.raises(InsufficientScopeError, match=f'check if resource\\("{mine}"\\)'):
            principal.require(READ, resource=other)


@ORDERS
def test_the_same_bytes_read_as_first_party_and_as_third_party_differ(reverse: bool) -> None:
    authority = block(("x",))
    appended = block(("f", "y"), facts=((1024, 1025),))  # name and term: the token's symbols 1024 and 1025
    # first-party: the token's table is x, f, y (x("f")); third-party: the block's own, f, y (f("y"))
    cases = [(False, Predicate("x", ("f",))), (True, Predicate("f", ("y",)))]
    for third_party, fact in ordered(cases, reverse):
        data = token_bytes((authority, False), (appended, third_party))
        for _ in range(2):
            blocks = read_blocks(data)
            assert blocks[1].facts == (fact,)
            assert blocks[1].third_party is third_party


@ORDERS
def test_an_authority_block_and_a_third_party_block_of_the_same_bytes_stay_apart(reverse: bool) -> None:
    # both read under their own symbols alone: only the kind of block tells them apart
    shared = block(("through", "payment"), facts=((1024, 1025),))
    alone = token_bytes((shared, False))
    appended = token_bytes((block(("x",)), False), (shared, True))
    for data, index, third_party in ordered([(alone, 0, False), (appended, 1, True)], reverse):
        for _ in range(2):
            read = read_blocks(data)[index]
            assert read.facts == (Predicate("through", ("payment",)),)
            assert read.third_party is third_party


@ORDERS
def test_the_same_bytes_after_two_authority_tables_read_differently(reverse: bool) -> None:
    appended = block(("f",), facts=((1025, 1024),))
    cases = [("x", Predicate("f", ("x",))), ("z", Predicate("f", ("z",)))]
    for symbol, fact in ordered(cases, reverse):
        assert read_blocks(token_bytes((block((symbol,)), False), (appended, False)))[1].facts == (fact,)


# --- 2. one cached chit, two routes requiring different operations, one second -------------------------


@ORDERS
async def test_operations_decide_per_route_within_one_second(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    read_only = attenuate(chit, operations=[READ], now=clock(), public_keys=keys)
    principal = await verifier.verify(read_only)
    assert await verifier.verify(read_only) is principal  # cached: the requests below share its memos

    def allowed() -> Principal:
        return verifier.authorize(principal, [READ], method="GET", path="/images/img-7")

    def refused() -> None:
        with pytest.raises(InsufficientScopeError, match="check all operation"):
            verifier.authorize(principal, [DELETE], method="DELETE", path="/images/img-7")

    if reverse:
        refused()
        bound = allowed()
    else:
        bound = allowed()
        refused()
    assert allowed() is bound  # the route's bound principal, remembered
    refused()
    assert isinstance(bound.chit, ChitRequest)
    assert bound.chit.operations == (READ,)
    bound.require(READ, resource="img-7")
    with pytest.raises(InsufficientScopeError, match="check all operation"):
        bound.require(DELETE, resource="img-7")


@ORDERS
async def test_operations_decide_per_route_over_http_within_one_second(
    http: httpx.AsyncClient, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    read_only = attenuate(chit, operations=[READ], now=clock(), public_keys=keys)
    requests = [("GET", 200), ("DELETE", 403), ("PUT", 403)]
    for method, code in ordered(requests, reverse) * 2:
        assert await status(http, method, "/images/img-7", read_only) == code, method


@ORDERS
async def test_an_operation_check_decides_per_route_whether_the_route_names_one(
    http: httpx.AsyncClient, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    # the route naming no permission leaves the check to its body; the other refuses at once
    write_only = attenuate(chit, datalog=f'check if operation("{WRITE}");', now=clock(), public_keys=keys)
    requests = [("PUT", 200), ("GET", 403)]
    for method, code in ordered(requests, reverse) * 2:
        assert await status(http, method, "/images/img-7", write_only) == code, method


async def test_operations_decide_per_request_on_the_same_method_and_path(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str]
) -> None:
    # routes sharing a method and path (or a verifier used without them) differ only by their operations
    read_only = attenuate(chit, operations=[READ], now=clock(), public_keys=keys)
    principal = await verifier.verify(read_only)
    for method, path in ((None, None), ("GET", "/images/img-7")):
        for _ in range(2):
            assert verifier.authorize(principal, [READ], method=method, path=path).permissions == principal.permissions
            with pytest.raises(InsufficientScopeError, match="check all operation"):
                verifier.authorize(principal, [DELETE], method=method, path=path)
            with pytest.raises(InsufficientScopeError, match="check all operation"):
                verifier.authorize(principal, [READ, DELETE], method=method, path=path)


@ORDERS
async def test_a_request_restriction_decides_per_method_and_per_path_within_one_second(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    one_request = attenuate(chit, method="GET", path="/images/img-7", now=clock(), public_keys=keys)
    principal = await verifier.verify(one_request)
    requests = [("GET", "/images/img-7", None), ("DELETE", "/images/img-7", "method"), ("GET", "/images/img-8", "path")]
    for method, path, refused in ordered(requests, reverse) * 2:
        if refused is None:
            verifier.authorize(principal, [READ], method=method, path=path).require(READ)
        else:
            with pytest.raises(InsufficientScopeError, match=f"check if {refused}"):
                verifier.authorize(principal, [READ], method=method, path=path)


async def test_a_check_left_pending_by_the_route_is_not_taken_as_passed_by_the_body(
    issuer: TestIssuer, verifier: Verifier, clock: Clock, keys: list[str]
) -> None:
    # the route names no permission: its resource check waits; a body decision naming no resource (the same
    # facts, nothing left pending) must refuse it
    delegated = issuer.chit("usr_alice", [READ], actors=["tagging"])
    one_image = attenuate(delegated, resource="img-7", now=clock(), public_keys=keys)
    principal = await verifier.verify(one_image)
    for _ in range(2):
        bound = verifier.authorize(principal, [], method="GET", path="/tagged")
        assert bound.chit is not None
        assert bound.chit.pending == ('check if resource("img-7") (block 1)',)
        with pytest.raises(InsufficientScopeError, match='check if resource\\("img-7"\\)'):
            bound.require_actor("tagging")
        bound.require_actor("tagging", resource="img-7")


async def test_the_bound_principal_follows_the_second(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str]
) -> None:
    # until 08:00:02 the check passes on time alone; from then on it waits for the resource
    either = 'check if time($t), $t < 2027-01-15T08:00:02Z or resource("img-7");'
    token = attenuate(chit, datalog=either, now=clock(), public_keys=keys)
    principal = await verifier.verify(token)
    clock.set(START + 1.5)
    before = verifier.authorize(principal, [READ], method="GET", path="/images/img-8")
    assert before.chit is not None
    assert before.chit.pending == ()
    before.require(READ, resource="img-8")
    clock.set(START + 2)
    after = verifier.authorize(principal, [READ], method="GET", path="/images/img-8")
    assert after.chit is not None
    assert after.chit.pending == (f"{either[:-1]} (block 1)",)
    with pytest.raises(InsufficientScopeError, match="check if time"):
        after.require(READ, resource="img-8")
    after.require(READ, resource="img-7")


# --- 3. a chit restricted to one resource, deciding on two in one second -------------------------------


@ORDERS
async def test_a_resource_restriction_decides_per_resource_within_one_second(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    one_image = attenuate(chit, resource="img-7", now=clock(), public_keys=keys)
    principal = verifier.authorize(await verifier.verify(one_image), [READ], method="GET", path="/images")
    assert principal.chit is not None
    assert principal.chit.pending == ('check if resource("img-7") (block 1)',)

    def allowed() -> None:
        principal.require_owner("usr_alice", unless=READ_ANY, resource="img-7")
        principal.require(READ, resource="img-7")
        assert principal.can(DELETE, resource="img-7")

    def refused() -> None:
        with pytest.raises(InsufficientScopeError, match='check if resource\\("img-7"\\)'):
            principal.require_owner("usr_alice", unless=READ_ANY, resource="img-8")
        with pytest.raises(InsufficientScopeError, match='check if resource\\("img-7"\\)'):
            principal.require(READ, resource="img-8")
        assert not principal.can(DELETE, resource="img-8")
        assert not principal.can(DELETE)  # a decision naming no resource

    for step in ((refused, allowed) if reverse else (allowed, refused)) * 2:
        step()
    again = verifier.authorize(await verifier.verify(one_image), [READ], method="GET", path="/images")
    assert again is principal
    with pytest.raises(InsufficientScopeError):
        again.require(READ, resource="img-8")


@ORDERS
async def test_a_resource_restriction_decides_per_resource_over_http_within_one_second(
    http: httpx.AsyncClient, chit: str, clock: Clock, keys: list[str], reverse: bool
) -> None:
    one_image = attenuate(chit, resource="img-7", now=clock(), public_keys=keys)
    requests = [("GET", "img-7", 200), ("GET", "img-8", 403), ("DELETE", "img-8", 403), ("PUT", "img-8", 403)]
    requests += [("PUT", "img-7", 200), ("DELETE", "img-7", 200)]
    for method, image, code in ordered(requests, reverse) * 2:
        assert await status(http, method, f"/images/{image}", one_image) == code, (method, image)


@ORDERS
async def test_an_owner_restriction_decides_per_owner_within_one_second(
    issuer: TestIssuer, verifier: Verifier, clock: Clock, keys: list[str], reverse: bool
) -> None:
    # read-any lets usr_alice read anyone's image; the chit only usr_carol's: two decisions, the same facts but
    # for the owner
    reader = issuer.chit("usr_alice", [READ, READ_ANY])
    carols_only = attenuate(reader, datalog='check if owner("usr_carol");', now=clock(), public_keys=keys)
    principal = verifier.authorize(await verifier.verify(carols_only), [READ], method="GET", path="/images/img-7")
    owners = [("usr_carol", True), ("usr_bob", False)]
    for owner, allowed in ordered(owners, reverse) * 2:
        assert principal.owns_or_can(owner, READ_ANY, resource="img-7") is allowed, owner
    with pytest.raises(InsufficientScopeError, match='check if owner\\("usr_carol"\\)'):
        principal.require_owner("usr_bob", unless=READ_ANY, resource="img-7")


# --- 4. revocation at the very next request ------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1], ids=["authority", "appended-block"])
async def test_a_revoked_chit_is_refused_at_the_next_request_of_the_same_second(
    issuer: TestIssuer, keys: list[str], which: int
) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    parent = issuer.chit("usr_alice", [READ])
    token = attenuate(parent, resource="img-7", now=issuer.clock(), public_keys=keys)
    sibling = attenuate(parent, resource="img-8", now=issuer.clock(), public_keys=keys)
    principal = await verifier.verify(token)
    for _ in range(2):  # the decision is now remembered, and the principal cached
        bound = verifier.authorize(await verifier.verify(token), [READ], method="GET", path="/images/img-7")
        bound.require(READ, resource="img-7")
    assert principal.chit is not None
    revoked.revoke_token(principal.chit.revocation_ids[which])
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)  # and stays refused (no longer cached, read again)
    if which == 1:
        assert (await verifier.verify(sibling)).kind == "chit"  # another branch of the same authority
    else:
        with pytest.raises(InvalidTokenError, match="revoked"):
            await verifier.verify(sibling)


async def test_a_revoked_chit_is_refused_over_http_in_the_same_second(issuer: TestIssuer, keys: list[str]) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    token = attenuate(issuer.chit("usr_alice", [READ]), resource="img-7", now=issuer.clock(), public_keys=keys)
    transport = httpx.ASGITransport(app=build_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as http:
        assert await status(http, "GET", "/images/img-7", token) == 200
        assert await status(http, "GET", "/images/img-7", token) == 200
        principal = await verifier.verify(token)
        assert principal.chit is not None
        revoked.revoke_token(principal.chit.revocation_ids[-1])
        assert await status(http, "GET", "/images/img-7", token) == 401


# --- 5. a lifetime ending at a second boundary ---------------------------------------------------------


async def test_an_attenuated_lifetime_ends_at_its_second_whatever_was_remembered(
    verifier: Verifier, http: httpx.AsyncClient, chit: str, clock: Clock, keys: list[str]
) -> None:
    clock.set(START + 0.6)
    short = attenuate(chit, ttl=1, now=clock(), public_keys=keys)  # valid while time <= START + 1
    principal = await verifier.verify(short)
    verifier.authorize(principal, [READ], method="GET", path="/images/img-7")
    clock.set(START + 1.99)
    assert await verifier.verify(short) is principal
    held = verifier.authorize(principal, [READ], method="GET", path="/images/img-7")  # remembered for START + 1
    held.require(READ)
    assert await status(http, "GET", "/images/img-7", short) == 200
    clock.set(START + 2)
    with pytest.raises(InsufficientScopeError, match="check if time"):
        held.require(READ)  # a principal held past the expiry
    with pytest.raises(InsufficientScopeError, match="check if time"):
        verifier.authorize(principal, [READ], method="GET", path="/images/img-7")  # not START + 1's outcome
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(short)
    assert await status(http, "GET", "/images/img-7", short) == 401


async def test_a_time_check_the_cache_does_not_count_as_an_expiry_still_ends_at_its_second(
    verifier: Verifier, http: httpx.AsyncClient, chit: str, clock: Clock, keys: list[str]
) -> None:
    # "$t < date" is not an expiry the verifier reads: the chit stays cached, the per-second memos must not
    before = attenuate(chit, datalog="check if time($t), $t < 2027-01-15T08:00:02Z;", now=clock(), public_keys=keys)
    clock.set(START + 1.99)
    principal = await verifier.verify(before)
    held = verifier.authorize(principal, [READ], method="GET", path="/images/img-7")
    held.require(READ, resource="img-7")
    assert await status(http, "GET", "/images/img-7", before) == 200
    clock.set(START + 2)
    assert await verifier.verify(before) is principal  # still cached
    with pytest.raises(InsufficientScopeError, match="check if time"):
        verifier.authorize(principal, [READ], method="GET", path="/images/img-7")
    with pytest.raises(InsufficientScopeError, match="check if time"):
        held.require(READ, resource="img-7")
    assert await status(http, "GET", "/images/img-7", before) == 403
    clock.set(START + 1.5)  # a clock set back: the earlier second decides as before
    held.require(READ, resource="img-7")


# --- 6. every memo stays bounded -----------------------------------------------------------------------


def distinct_tokens(count: int, offset: int = 0) -> list[bytes]:
    return [token_bytes((block((f"s{offset + n}",), facts=((1024, 1024),)), False)) for n in range(count)]


def test_the_block_memo_holds_at_most_its_bound_and_forgets_the_oldest_first() -> None:
    bound = chit_blocks.MAX_REMEMBERED_BLOCKS
    assert bound == 4096
    tokens = distinct_tokens(bound + 100)
    oldest = read_blocks(tokens[0])[0]
    assert read_blocks(tokens[0])[0] is oldest  # remembered
    for data in tokens[1:]:
        read_blocks(data)
    assert len(chit_blocks._READ) == bound
    newest = read_blocks(tokens[-1])[0]
    assert read_blocks(tokens[-1])[0] is newest
    again = read_blocks(tokens[0])[0]
    assert again == oldest
    assert again is not oldest  # forgotten, read anew
    assert len(chit_blocks._READ) == bound
    forget_blocks()
    assert len(chit_blocks._READ) == 0
    assert read_blocks(tokens[-1])[0] is not newest


def test_the_block_memo_stays_bounded_and_correct_under_threads() -> None:
    bound = chit_blocks.MAX_REMEMBERED_BLOCKS

    def read(offset: int) -> bool:
        tokens = distinct_tokens(1500, offset)
        return all(
            read_blocks(data)[0].facts == (Predicate(f"s{offset + n}", (f"s{offset + n}",)),)
            for n, data in enumerate(tokens)
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(read, range(0, 6 * 1500, 1500)))
    assert len(chit_blocks._READ) <= bound


async def test_the_request_memos_stay_bounded_and_keep_deciding(
    verifier: Verifier, chit: str, clock: Clock, keys: list[str]
) -> None:
    one_path = attenuate(chit, path="/images/img-7", now=clock(), public_keys=keys)
    principal = await verifier.verify(one_path)
    assert isinstance(principal.chit, ChitRequest)
    routes = ca.MAX_BOUND_REQUESTS + 36
    for n in range(routes):
        with pytest.raises(InsufficientScopeError, match="check if path"):
            verifier.authorize(principal, [READ], method="GET", path=f"/images/other-{n}")
        assert len(principal.chit.bound) <= ca.MAX_BOUND_REQUESTS
    for _ in range(2):
        bound = verifier.authorize(principal, [READ], method="GET", path="/images/img-7")
        bound.require(READ)
    for n in range(routes):  # every route allowed binds a principal of its own; they stay bounded too
        verifier.authorize(principal, [READ], method=f"M{n}", path="/images/img-7")
        assert len(principal._requests) <= ca.MAX_BOUND_REQUESTS
    assert verifier.authorize(principal, [READ], method="GET", path="/images/img-7").chit is not None


def test_the_decision_memo_stays_bounded_and_keeps_deciding(issuer: TestIssuer, keys: list[str]) -> None:
    authorizer = ca.ChitAuthorizer(issuer.issuer, "image-store")
    token = attenuate(issuer.chit("usr_alice", [READ]), resource="img-7", now=issuer.clock(), public_keys=keys)
    chit = authorizer.read(token, lambda _: (ca.public_key(keys[0]),), issuer.clock())
    now = issuer.clock()
    for n in range(ca.MAX_REMEMBERED_OUTCOMES + 50):
        outcome = authorizer.evaluate(chit, now=now, operations=[READ], resource=f"img-{n}")
        assert (outcome.refusal is None) == (n == 7), n
    outcomes: dict[Any, Any] = authorizer._outcomes
    assert len(outcomes) <= ca.MAX_REMEMBERED_OUTCOMES
    assert authorizer.evaluate(chit, now=now, operations=[READ], resource="img-7").refusal is None
    assert authorizer.evaluate(chit, now=now, operations=[READ], resource="img-8").refusal is not None
