"""``chit.core.chit_authorizer``: a chit verified by its root key id, its vocabulary read from the signed bytes,
appended blocks bounded before any datalog runs, each limit at and over its value, datalog bombs refused
quickly (their time is measured and reported, never asserted), checks deferred only where stated, and blocks
whose bytes protobuf decoders could read two ways refused."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import biscuit_auth
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chit.core import biscuit as server_side  # the auth server's minting: the same vocabulary
from chit.core import chit_authorizer as ca
from chit.core.chit_blocks import DEFAULT_SYMBOLS, MalformedChitError, outline, read_blocks
from chit.errors import InvalidTokenError

ISSUER = "https://issuer.chit.test"
SERVICE = "image-store"
NOW = 1_800_000_000
READ = "image-store:images:read"
DELETE = "image-store:images:delete"
PRIVATE, PUBLIC = ca.new_root_key()
OTHER_PRIVATE, OTHER_PUBLIC = ca.new_root_key()


def keys(key_id: int | None) -> tuple[Any, ...]:
    return (ca.public_key(PUBLIC),) if key_id in (1, None) else ()


def mint(
    permissions: Sequence[str] = (READ, DELETE),
    *,
    private: str = PRIVATE,
    root_key_id: int | None = 1,
    expires_at: int = NOW + 600,
    **options: Any,
) -> str:
    values: dict[str, Any] = {"issuer": ISSUER, "subject": "usr_alice", "client_id": "photo-app"}
    values.update(options)
    return ca.mint(private, root_key_id, permissions=permissions, expires_at=expires_at, **values)


def append(token: str, *sources: str, public: str = PUBLIC) -> str:
    biscuit = biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(public))
    for source in sources:
        biscuit = biscuit.append(biscuit_auth.BlockBuilder(source))
    return str(biscuit.to_base64())


@pytest.fixture
def authorizer() -> ca.ChitAuthorizer:
    return ca.ChitAuthorizer(ISSUER, SERVICE)


def read(authorizer: ca.ChitAuthorizer, token: str, now: float = NOW) -> ca.VerifiedChit:
    return authorizer.read(token, keys, now)


def refused(authorizer: ca.ChitAuthorizer, token: str, now: float = NOW) -> str:
    with pytest.raises(InvalidTokenError) as caught:
        read(authorizer, token, now)
    return caught.value.reason


# --- the authority block --------------------------------------------------------------------------------


def test_the_authority_vocabulary_is_read_from_the_signed_bytes(authorizer: ca.ChitAuthorizer) -> None:
    token = mint(actors=[("svc_tagging", "tagging"), ("svc_cart", "cart")])
    chit = read(authorizer, token)
    assert chit.authority == ca.Authority(
        issuer=ISSUER,
        subject="usr_alice",
        client_id="photo-app",
        rights=frozenset({READ, DELETE}),
        actors=(("svc_tagging", "tagging"), ("svc_cart", "cart")),
        expires_at=NOW + 600,
    )
    assert chit.expires_at == NOW + 600
    assert chit.plain
    assert len(chit.revocation_ids) == 1
    assert len(chit.revocation_ids[0]) == 128
    assert outline(base64.urlsafe_b64decode(token)).root_key_id == 1


def test_the_session_a_chit_comes_from_is_read_with_its_authority(authorizer: ca.ChitAuthorizer) -> None:
    assert read(authorizer, mint(session_id="rtf_abc")).authority.session_id == "rtf_abc"
    assert read(authorizer, mint()).authority.session_id is None
    # an appended block cannot give it one: only the authority block's facts are read as the vocabulary
    assert read(authorizer, append(mint(), 'session("rtf_other");')).authority.session_id is None
    assert "more than one session" in refused(authorizer, mint(session_id="rtf_a", datalog='session("rtf_b");'))


def test_a_client_id_with_quotes_cannot_smuggle_a_right(authorizer: ca.ChitAuthorizer) -> None:
    # the binding prints this authority block as client("x"); right("image-store:images:delete"); ...
    token = mint((READ,), client_id='x"); right("image-store:images:delete')
    biscuit = biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(PUBLIC))
    assert 'right("image-store:images:delete")' in biscuit.block_source(0)
    chit = read(authorizer, token)
    assert chit.authority.rights == {READ}
    assert chit.authority.client_id == 'x"); right("image-store:images:delete'


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"issuer": "https://evil.test"}, "another issuer"),
        ({"permissions": ("payment:charges:create",)}, "not meant for this audience"),
        ({"permissions": ("image-store-x:images:read",)}, "not meant for this audience"),
        ({"expires_at": NOW - 1}, "expired"),
        ({"private": OTHER_PRIVATE}, "signature is invalid"),
    ],
)
def test_the_authority_must_be_this_issuers_for_this_service_and_alive(
    authorizer: ca.ChitAuthorizer, options: dict[str, Any], reason: str
) -> None:
    assert reason in refused(authorizer, mint(**options))


def test_a_chit_expires_after_its_last_second(authorizer: ca.ChitAuthorizer) -> None:
    token = mint(expires_at=NOW)
    assert read(authorizer, token, NOW + 0.999).expires_at == NOW
    assert "expired" in refused(authorizer, token, NOW + 1)


def test_an_attenuated_lifetime_is_an_expiry(authorizer: ca.ChitAuthorizer) -> None:
    token = append(mint(), "check if time($t), $t <= 2027-01-15T08:00:30Z;")  # NOW + 30
    assert read(authorizer, token).expires_at == NOW + 30
    assert "expired" in refused(authorizer, token, NOW + 31)


@pytest.mark.parametrize(
    ("datalog", "reason"),
    [
        ('subject("usr_bob");', "exactly one subject"),
        ('issuer("https://issuer.chit.test");', "exactly one issuer"),
        ("right(7);", "malformed right"),
        ('actor(2, "svc", "svc");', "not numbered from 0"),
        ('actor("0", "svc", "svc");', "malformed actor"),
        ("session(7);", "malformed session"),
    ],
)
def test_a_malformed_authority_is_refused(authorizer: ca.ChitAuthorizer, datalog: str, reason: str) -> None:
    assert reason in refused(authorizer, mint(datalog=datalog))


def test_an_authority_without_its_expiry_check_is_refused(authorizer: ca.ChitAuthorizer) -> None:
    builder = biscuit_auth.BiscuitBuilder(f'issuer("{ISSUER}"); subject("usr_alice"); client("c"); right("{READ}");')
    builder.set_root_key_id(1)
    token = builder.build(biscuit_auth.PrivateKey(PRIVATE)).to_base64()
    assert "no expiry check" in refused(authorizer, token)


def test_wildcard_rights_are_never_minted_nor_honoured(authorizer: ca.ChitAuthorizer) -> None:
    with pytest.raises(ValueError, match="'\\*' segment"):
        mint(("image-store:images:*",))
    token = mint((READ,), datalog='right("image-store:*:*");')
    assert read(authorizer, token).authority.rights == {READ}


# --- root keys ------------------------------------------------------------------------------------------


def test_root_keys_from_discovery_by_id_and_without() -> None:
    document = {
        "biscuit_root_keys": [
            {"id": 2, "public_key": OTHER_PUBLIC},
            {"id": 1, "public_key": PUBLIC},
            {"id": "3", "public_key": PUBLIC},  # not an id
            {"id": 4, "public_key": "not a key"},
            "garbage",
        ],
        "biscuit_public_keys": [OTHER_PUBLIC, PUBLIC, "ed25519/00"],
    }
    root_keys = ca.parse_root_keys(document)
    assert dict(root_keys.by_id) == {2: OTHER_PUBLIC, 1: PUBLIC}
    assert root_keys.unlabeled == ()
    assert [str(k) for k in root_keys.candidates(1)] == [PUBLIC]
    assert root_keys.candidates(9) == ()
    assert [str(k) for k in root_keys.candidates(None)] == [OTHER_PUBLIC, PUBLIC]
    bare = ca.parse_root_keys({"biscuit_public_keys": [OTHER_PUBLIC, PUBLIC]})
    assert [str(k) for k in bare.candidates(7)] == [OTHER_PUBLIC, PUBLIC]
    assert not ca.parse_root_keys({})


def test_the_root_key_id_picks_the_key(authorizer: ca.ChitAuthorizer) -> None:
    with pytest.raises(ca.UnknownRootKeyError) as caught:
        read(authorizer, mint(root_key_id=5))
    assert caught.value.key_id == 5
    both = ca.parse_root_keys(
        {"biscuit_root_keys": [{"id": 1, "public_key": PUBLIC}, {"id": 2, "public_key": OTHER_PUBLIC}]}
    )
    assert read(authorizer, mint(root_key_id=None)).authority.subject == "usr_alice"
    assert authorizer.read(mint(private=OTHER_PRIVATE, root_key_id=2), both.candidates, NOW).plain
    # a chit signed by key 2 that claims id 1 is checked with key 1 only
    assert "signature is invalid" in refused(authorizer, mint(private=OTHER_PRIVATE, root_key_id=1))


# --- what appended blocks may hold ----------------------------------------------------------------------

TYPICAL = (
    'check all operation($op), {"image-store:images:read"}.contains($op);'
    ' check if service("image-store"); check if time($t), $t <= 2027-01-15T08:10:00Z;'
)


def test_a_typical_attenuation_is_accepted_and_cheap(authorizer: ca.ChitAuthorizer) -> None:
    chit = read(authorizer, append(mint(), TYPICAL))
    assert not chit.plain
    assert ca._work(read_blocks(chit.biscuit.to_bytes())) < ca.DEFAULT_LIMITS.max_work // 50


def facts(count: int) -> str:
    return "".join(f"x({i});" for i in range(count))


def checks(count: int) -> str:
    return "check if time($t), $t > 2000-01-01T00:00:00Z;" * count


def alternatives(count: int) -> str:
    return "check if " + " or ".join(["time($t), $t > 2000-01-01T00:00:00Z"] * count) + ";"


def joins(count: int) -> str:
    return "check if " + ", ".join(f"time($t{i})" for i in range(count)) + ";"


def operations(count: int) -> str:
    """A check of exactly ``count`` operations: n terms, n - 1 additions, a comparison with 0 (2n + 1), and for
    an even count parentheses (one more)."""
    terms = " + ".join(["1"] * ((count - 1) // 2 if count % 2 else (count - 2) // 2))
    return f"check if {terms} > 0;" if count % 2 else f"check if ({terms}) > 0;"


LIMITS = ca.DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("name", "build", "limit"),
    [
        ("facts", facts, LIMITS.max_block_facts),
        ("checks", checks, LIMITS.max_block_checks),
        ("alternatives", alternatives, LIMITS.max_check_queries),
        ("predicates", joins, LIMITS.max_query_predicates),
        ("operations", operations, LIMITS.max_query_ops),
    ],
)
def test_each_block_bound_is_the_largest_accepted(
    authorizer: ca.ChitAuthorizer, name: str, build: Callable[[int], str], limit: int
) -> None:
    assert read(authorizer, append(mint(), build(limit)))
    assert name.rstrip("s") in refused(authorizer, append(mint(), build(limit + 1)))


def test_the_operations_helper_counts_exactly() -> None:
    for count in (63, 64, 65):
        blocks = read_blocks(base64.urlsafe_b64decode(append(mint(), operations(count))))
        assert len(blocks[1].checks[0].queries[0].ops) == count


def test_the_block_count_is_bounded_before_any_signature(authorizer: ca.ChitAuthorizer) -> None:
    at_limit = append(mint(), *["check if true;"] * (LIMITS.max_blocks - 1))
    assert len(read(authorizer, at_limit).revocation_ids) == LIMITS.max_blocks
    over = append(at_limit, "check if true;")
    reason = refused(authorizer, over)
    assert f"{LIMITS.max_blocks + 1} blocks" in reason


def test_the_size_is_bounded_before_anything(authorizer: ca.ChitAuthorizer) -> None:
    token = mint()
    small = ca.ChitAuthorizer(ISSUER, SERVICE, ca.ChitLimits(max_size=len(token)))
    assert small.read(token, keys, NOW)
    tight = ca.ChitAuthorizer(ISSUER, SERVICE, ca.ChitLimits(max_size=len(token) - 1))
    with pytest.raises(InvalidTokenError, match=f"larger than {len(token) - 1} bytes"):
        tight.read(token, keys, NOW)


def sized(length: int) -> str:
    """A valid chit of exactly ``length`` characters (a multiple of 4), grown by a long fact in its authority."""
    for padding in range(length):
        token = mint(datalog=f'note("{"x" * padding}");')
        if len(token) >= length:
            assert len(token) == length, f"no chit of exactly {length} characters"
            return token
    raise AssertionError("unreachable")


def test_the_default_size_limit_is_16_kib_and_is_accepted(authorizer: ca.ChitAuthorizer) -> None:
    at_limit = sized(16 * 1024)
    assert read(authorizer, at_limit)
    assert read(authorizer, at_limit.rstrip("="))  # unpadded base64url is read too
    over = sized(16 * 1024 + 4)
    assert "larger than 16384 bytes" in refused(authorizer, over)


def test_the_work_estimate_is_bounded(authorizer: ca.ChitAuthorizer) -> None:
    many_rights = mint(tuple(f"image-store:images:a{i}" for i in range(100)))
    join = 'check if right($a), right($b), $a == "z";'  # 100 x 100 combinations
    assert "units of work" in refused(authorizer, append(many_rights, join))
    few_rights = mint(tuple(f"image-store:images:a{i}" for i in range(10)))
    assert read(authorizer, append(few_rights, join))  # 10 x 10


def test_the_work_limit_is_the_largest_accepted() -> None:
    token = append(mint(tuple(f"image-store:images:a{i}" for i in range(10))), "check if right($a), right($b);")
    work = ca._work(read_blocks(base64.urlsafe_b64decode(token)))
    assert work == ca.QUERY_COST + 10 * 10 * 1
    assert ca.ChitAuthorizer(ISSUER, SERVICE, ca.ChitLimits(max_work=work)).read(token, keys, NOW)
    with pytest.raises(InvalidTokenError, match=f"about {work} units of work; at most {work - 1}"):
        ca.ChitAuthorizer(ISSUER, SERVICE, ca.ChitLimits(max_work=work - 1)).read(token, keys, NOW)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("y($x) <- right($x);", "rules"),
        ("check if [1, 2].all($x -> $x > 0);", "closure"),
        ("check if [1, 2].any($x -> $x > 0);", "closure"),
        ('check if "abc".matches("\\\\w{1000}");', "regular expression"),
        ('check if "abc".extern::boom();', "extern function"),
        ("x({1, 2, 3});", "set, array or map"),
        ("x([1, 2, 3]);", "set, array or map"),
    ],
)
def test_forbidden_constructs_are_refused(authorizer: ca.ChitAuthorizer, source: str, reason: str) -> None:
    assert reason in refused(authorizer, append(mint(), source))


def test_third_party_blocks_are_bounded_the_same_way(authorizer: ca.ChitAuthorizer) -> None:
    service = biscuit_auth.KeyPair()
    biscuit = biscuit_auth.Biscuit.from_base64(mint(), biscuit_auth.PublicKey(PUBLIC))

    def third_party(source: str) -> str:
        request = biscuit.third_party_request()
        block = request.create_block(service.private_key, biscuit_auth.BlockBuilder(source))
        return str(biscuit.append_third_party(service.public_key, block).to_base64())

    chit = read(authorizer, third_party('handled("cart"); check if service("image-store");'))
    assert len(chit.revocation_ids) == 2
    assert "rules" in refused(authorizer, third_party("y($x) <- right($x);"))
    assert "predicates" in refused(authorizer, third_party(joins(3)))


def test_a_check_whose_printed_text_hides_a_join_is_read_exactly(authorizer: ca.ChitAuthorizer) -> None:
    # strings with quotes make the printed source read as a one-predicate check; the bytes hold three joins
    hidden = 'check if d("x\\", \\"y\\", "), right($a), right($b), right($c), e("), f(\\"");'
    token = append(mint(), hidden)
    printed = biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(PUBLIC)).block_source(1)
    assert printed.count("right(") == 3
    assert printed.count('"') % 2 == 0
    assert "joining 5 predicates" in refused(authorizer, token)


# --- datalog bombs: refused before they run ---------------------------------------------------------------

BOMBS = {
    "generating rules": facts(16) + "y($a, $b) <- x($a), x($b); z($a, $b, $c) <- y($a, $b), x($c);",
    "three-way join": facts(16) + "check if x($a), x($b), x($c), $a + $b + $c == -1;",
    "huge fact count": facts(500) + "check if x($a), x($b), $a + $b == -1;",
    "join of own facts": facts(16) + "check if x($a), x($b), $a + $b == -1 trusting previous;" * 4,
    "nested closures": "check if [{0}].all($x -> [{0}].all($y -> [{0}].all($z -> $x + $y + $z >= 0)));".format(
        ", ".join(str(i) for i in range(300))
    ),
    "regex compiled per evaluation": 'check if "aaaa".matches("\\\\w{1000}");' * 16,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_datalog_bombs_are_refused_before_any_evaluation(
    authorizer: ca.ChitAuthorizer, name: str, record_property: Callable[[str, object], None]
) -> None:
    token = append(mint(), BOMBS[name]) if name != "join of own facts" else append(mint(), *[BOMBS[name]] * 6)
    started = time.perf_counter()
    reason = refused(authorizer, token)
    elapsed = time.perf_counter() - started
    record_property("refused_in_ms", round(elapsed * 1000, 3))  # measured, not asserted
    record_property("reason", reason)
    print(f"{name}: {len(token)} characters, refused in {elapsed * 1000:.2f} ms: {reason}")


def test_a_chit_within_every_bound_evaluates_under_the_time_limit(
    authorizer: ca.ChitAuthorizer, record_property: Callable[[str, object], None]
) -> None:
    # among the costliest chits the bounds accept: 15 blocks of 6 checks of 4 alternatives (9,000 units)
    check = "check if n(1) or n(2) or time($t), $t < 2000-01-01T00:00:00Z or n(3);"
    chit = read(authorizer, append(mint(), *[check * 6] * 15))
    assert ca._work(read_blocks(chit.biscuit.to_bytes())) > 0.85 * ca.DEFAULT_LIMITS.max_work
    started = time.perf_counter()
    outcome = authorizer.evaluate(chit, now=NOW, operations=[READ])
    elapsed = time.perf_counter() - started
    record_property("evaluated_in_ms", round(elapsed * 1000, 3))
    print(f"15 blocks x 6 checks x 4 alternatives evaluated in {elapsed * 1000:.2f} ms")
    assert outcome.refusal is not None
    assert "chit check failed" in outcome.refusal


# --- decisions ------------------------------------------------------------------------------------------


def test_a_failed_check_is_named(authorizer: ca.ChitAuthorizer) -> None:
    chit = read(authorizer, append(mint(), 'check if service("payment");'))
    outcome = authorizer.evaluate(chit, now=NOW, operations=[READ])
    assert outcome.refusal == 'chit check failed: check if service("payment") (block 1)'


def test_the_authorizer_requires_a_right_for_each_operation(authorizer: ca.ChitAuthorizer) -> None:
    chit = read(authorizer, append(mint((READ,)), "check if true;"))
    assert authorizer.evaluate(chit, now=NOW, operations=[READ]) == ca.ALLOWED
    refusal = authorizer.evaluate(chit, now=NOW, operations=[READ, DELETE]).refusal
    assert refusal == f'chit check failed: check if right("{DELETE}") (the service\'s authorizer)'


def test_checks_that_need_the_route_body_wait_only_where_deferred(authorizer: ca.ChitAuthorizer) -> None:
    chit = read(authorizer, append(mint(), 'check if resource("img-7"); check if method("GET");'))
    waiting = authorizer.evaluate(chit, now=NOW, operations=[READ], method="GET", defer=ca.BODY_PREDICATES)
    assert waiting == ca.Outcome(None, ('check if resource("img-7") (block 1)',))
    assert authorizer.evaluate(chit, now=NOW, operations=[READ], method="GET", resource="img-7") == ca.ALLOWED
    other = authorizer.evaluate(chit, now=NOW, operations=[READ], method="GET", resource="img-8")
    assert other.refusal == 'chit check failed: check if resource("img-7") (block 1)'
    # a check on what the request already states is never deferred
    post = authorizer.evaluate(chit, now=NOW, operations=[READ], method="POST", defer=ca.BODY_PREDICATES)
    assert post.refusal == 'chit check failed: check if method("GET") (block 1)'


def test_text_that_mimics_a_failed_check_cannot_hide_one(authorizer: ca.ChitAuthorizer) -> None:
    mimic = 'check if service("x, Check n°0 in block n°2: check if resource(\\"a\\")");'
    chit = read(authorizer, append(mint(), mimic, 'check if resource("a");'))
    outcome = authorizer.evaluate(chit, now=NOW, operations=[READ], defer=ca.BODY_PREDICATES)
    assert outcome.refusal is not None
    assert outcome.refusal.startswith('chit check failed: check if service("x')


def test_an_evaluation_failure_refuses_with_its_reason(authorizer: ca.ChitAuthorizer) -> None:
    chit = read(authorizer, append(mint(), "check if 9223372036854775807 + 1 > 0;"))
    assert authorizer.evaluate(chit, now=NOW).refusal == "chit checks could not be evaluated: Overflow"


def test_limits_below_10_ms_are_refused() -> None:
    with pytest.raises(ValueError, match="10 ms"):
        ca.ChitLimits(max_time=timedelta(milliseconds=5))


# --- outcomes remembered across seconds -------------------------------------------------------------------


def date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_chit_that_reads_the_time_only_to_expire_is_decided_once_until_it_expires(
    authorizer: ca.ChitAuthorizer,
) -> None:
    chit = read(authorizer, append(mint(), f"check if time($t), $t <= {date(NOW + 300)};"))
    assert (chit.timeless, chit.expires_at) == (True, NOW + 300)
    assert authorizer.evaluate(chit, now=NOW, operations=[READ]).refusal is None
    assert authorizer.evaluate(chit, now=NOW + 200, operations=[READ]).refusal is None
    assert len(authorizer._outcomes) == 1  # one decision for both seconds
    late = authorizer.evaluate(chit, now=NOW + 301, operations=[READ]).refusal  # past it: evaluated afresh
    assert late is not None
    assert late.startswith("chit check failed: check if time($t)")


@pytest.mark.parametrize(
    ("check", "flips"),
    [
        ("check if time($t), {start} <= $t;", "start"),  # not before: no expiry, and the time decides
        ('check if time($t), $t <= {end} or service("elsewhere");', "end"),
        ("check all time($t), $t <= {end};", "end"),
        ("reject if time($t), $t > {start};", "start"),
        ("check if time($t), $t <= {end}, $t >= {start};", "start"),
    ],
)
def test_a_chit_whose_checks_read_the_time_otherwise_is_decided_every_second(
    authorizer: ca.ChitAuthorizer, check: str, flips: str
) -> None:
    """Each check's outcome changes at ``start`` or ``end``: an outcome remembered across that second would
    allow what the chit refuses, or the reverse."""
    times = {"start": NOW + 100, "end": NOW + 500}
    chit = read(authorizer, append(mint(), check.format(start=date(times["start"]), end=date(times["end"]))))
    assert not chit.timeless
    assert chit.expires_at == NOW + 600  # the authority's: none of these is an expiry
    before = authorizer.evaluate(chit, now=times[flips] - 1, operations=[READ]).refusal
    after = authorizer.evaluate(chit, now=times[flips] + 1, operations=[READ]).refusal
    assert (before is None) != (after is None), (before, after)


# --- the decoder ------------------------------------------------------------------------------------------


def test_the_decoder_reads_what_the_binding_prints() -> None:
    source = (
        'x(1, -5, true, hex:0102, 2020-01-01T00:00:00Z, "s"); check all operation($op), {"a:b:c"}.contains($op);'
        ' check if service("payment") or resource($r), owner($o), $r == $o; reject if method("DELETE");'
    )
    blocks = read_blocks(base64.urlsafe_b64decode(append(mint(), source)))
    fact = blocks[1].facts[0]
    assert fact.name == "x"
    assert fact.terms[:4] == (1, -5, True, b"\x01\x02")
    assert [check.kind for check in blocks[1].checks] == [1, 0, 2]
    assert [q.names for q in blocks[1].checks[1].queries] == [("service",), ("resource", "owner")]
    expiry = blocks[0].checks[0].queries[0].expiry
    assert expiry == NOW + 600
    assert datetime.fromtimestamp(expiry, UTC) == datetime(2027, 1, 15, 8, 10, tzinfo=UTC)


@pytest.mark.parametrize("cut", [1, 10, 100, -1, -10])
def test_truncated_bytes_never_decode(cut: int) -> None:
    raw = base64.urlsafe_b64decode(append(mint(), TYPICAL))
    with pytest.raises(MalformedChitError):
        read_blocks(raw[:cut])


def test_a_chit_minted_by_the_auth_server_verifies_here() -> None:
    private = server_side.generate_root_private_key()
    public = server_side.root_public_key(private)
    token = server_side.mint_chit(
        private,
        3,
        issuer=ISSUER,
        subject="usr_alice",
        client_id="image-store",
        permissions=[READ, "tagging:tags:write"],
        actors=[("svc_tagging", "tagging")],
        expires_at=NOW + 60,
    )
    root_keys = ca.parse_root_keys({"biscuit_root_keys": [{"id": 3, "public_key": public}]})
    chit = ca.ChitAuthorizer(ISSUER, SERVICE).read(token, root_keys.candidates, NOW)
    assert chit.authority == ca.Authority(
        issuer=ISSUER,
        subject="usr_alice",
        client_id="image-store",
        rights=frozenset({READ, "tagging:tags:write"}),
        actors=(("svc_tagging", "tagging"),),
        expires_at=NOW + 60,
    )
    assert chit.plain


def test_a_panic_in_the_binding_is_a_refusal(authorizer: ca.ChitAuthorizer, monkeypatch: pytest.MonkeyPatch) -> None:
    class PanicException(BaseException):  # what pyo3 raises for a Rust panic: not an Exception
        pass

    def panic(*args: object) -> None:
        raise PanicException("explicit panic")

    token = mint()
    monkeypatch.setattr(biscuit_auth.Biscuit, "from_bytes", panic)
    assert refused(authorizer, token) == "chit cannot be read"


# --- blocks whose bytes could be read two ways ------------------------------------------------------------
# Whoever holds a chit can sign any bytes as its next block. Protocol Buffers decoders differ on a field meant
# to occur once that occurs twice (the binding keeps the last name, merges two predicates into one): such
# blocks, which the binding accepts, are refused before any bound is computed on them.

NONCE = DEFAULT_SYMBOLS.index("nonce")  # a name no fact of a chit has: a join over it costs nothing


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field(number: int, value: int | bytes) -> bytes:
    """A varint field (an int) or a length-delimited one (bytes)."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        value, i = read_varint(buf, i)
        if key & 7 == 2:
            out.append((key >> 3, buf[i : i + value]))
            i += value
        else:
            out.append((key >> 3, value))
    return out


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def part(buf: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a message."""
    return next(value for n, value in fields(buf) if n == number and isinstance(value, bytes))


def encode(parts: Sequence[tuple[int, int | bytes]]) -> bytes:
    return b"".join(field(number, value) for number, value in parts)


def without(buf: bytes, number: int) -> bytes:
    return encode([(n, value) for n, value in fields(buf) if n != number])


def rewrite(buf: bytes, path: tuple[int, ...], change: Callable[[bytes], bytes]) -> bytes:
    """``buf`` with every message reached through ``path`` (field numbers) replaced by ``change(message)``."""
    if not path:
        return change(buf)
    return encode(
        [
            (n, rewrite(value, path[1:], change) if n == path[0] and isinstance(value, bytes) else value)
            for n, value in fields(buf)
        ]
    )


def last_block(token: str) -> bytes:
    """The bytes of the token's last block (its ``Block`` message, as signed)."""
    signed = [value for number, value in fields(base64.urlsafe_b64decode(token)) if number in (2, 3)]
    return part(bytes(signed[-1]), 1)


def append_bytes(token: str, data: bytes) -> str:
    """``token`` with a first-party block of exactly ``data`` appended, signed as biscuit-auth signs one (block
    signature payload v1) with the secret key the token carries for its next block."""
    container = fields(base64.urlsafe_b64decode(token))
    previous = bytes([value for number, value in container if number in (2, 3)][-1])
    proof = bytes(next(value for number, value in container if number == 4))
    signer = Ed25519PrivateKey.from_private_bytes(part(proof, 1))
    following = Ed25519PrivateKey.generate()
    next_key = following.public_key().public_bytes_raw()
    payload = (
        b"\0BLOCK\0\0VERSION\0" + (1).to_bytes(4, "little") + b"\0PAYLOAD\0" + data
        + b"\0ALGORITHM\0" + (0).to_bytes(4, "little") + b"\0NEXTKEY\0" + next_key
        + b"\0PREVSIG\0" + part(previous, 3)
    )  # fmt: skip
    signed = encode([(1, data), (2, encode([(1, 0), (2, next_key)])), (3, signer.sign(payload)), (5, 1)])
    kept = [(number, value) for number, value in container if number != 4]
    return base64.urlsafe_b64encode(
        encode([*kept, (3, signed), (4, encode([(1, following.private_bytes_raw())]))])
    ).decode()


def printed(token: str, block: int = 1) -> str:
    """What the binding evaluates for a block (it loads only what it accepts)."""
    return str(biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(PUBLIC)).block_source(block))


def test_blocks_appended_with_exact_bytes_verify_as_the_binding_wrote_them(authorizer: ca.ChitAuthorizer) -> None:
    token = mint()
    for source in (TYPICAL, "x(1, true);", 'check if {"a": 1}.get("a") == 1 or [1, 2].contains(1);'):
        rewritten = append_bytes(token, last_block(append(token, source)))
        assert read(authorizer, rewritten)
        assert printed(rewritten) == printed(append(token, source))


def test_a_body_predicate_with_two_names_is_refused(authorizer: ca.ChitAuthorizer) -> None:
    many_rights = mint(tuple(f"image-store:images:a{i}" for i in range(100)))
    join = 'check if right($a), right($b), $a == "z";'  # 100 x 100 combinations
    assert "units of work" in refused(authorizer, append(many_rights, join))
    # each body predicate gets a leading name: the binding keeps the last (right), a reader of the first
    # would count a join over nonce, which nothing matches, and let the join run
    data = rewrite(last_block(append(many_rights, join)), (6, 1, 2), lambda body: field(1, NONCE) + body)
    token = append_bytes(many_rights, data)
    assert "check if right($a), right($b)" in printed(token)
    assert refused(authorizer, token) == "chit does not decode: a predicate has two names"


def test_a_fact_with_two_predicates_is_refused(authorizer: ca.ChitAuthorizer) -> None:
    token = mint()
    assert "set, array or map" in refused(authorizer, append(token, "y([1, 2, 3, 4, 5, 6, 7, 8], 1);"))
    # one fact holding the predicates of x([...]) and y(1): the binding merges them into y([...], 1), a reader
    # of the last predicate alone would see y(1), a fact without an array
    data = last_block(append(token, "x([1, 2, 3, 4, 5, 6, 7, 8]); y(1);"))
    array, one = (part(bytes(value), 1) for number, value in fields(data) if number == 4)
    merged = without(data, 4) + field(4, field(1, array) + field(1, one))
    crafted = append_bytes(token, merged)
    assert printed(crafted).strip() == "y([1, 2, 3, 4, 5, 6, 7, 8], 1);"
    assert refused(authorizer, crafted) == "chit does not decode: a fact has two predicates"


def test_an_operation_kind_beyond_int32_is_refused(authorizer: ca.ChitAuthorizer) -> None:
    # the binding keeps an enum's low 32 bits: 2**32 + 8 is a regular expression to it
    assert "regular expression" in refused(authorizer, append(mint(), 'check if "abc".matches("a");'))
    source = last_block(append(mint(), 'check if "abc".starts_with("a");'))
    data = rewrite(source, (6, 1, 3, 1, 3), lambda binary: field(1, 2**32 + 8))
    token = append_bytes(mint(), data)
    assert '"abc".matches("a")' in printed(token)
    assert refused(authorizer, token) == f"chit does not decode: enum value {2**32 + 8} out of range"


@pytest.mark.parametrize(
    ("source", "path", "change", "reason"),
    [
        ("x(1);", (4, 1), lambda p: field(1, NONCE) + p, "a predicate has two names"),
        ("x(1);", (4, 1, 2), lambda term: term + field(6, 1), "a term holds no value or more than one"),
        ("x(1);", (), lambda block: block + field(3, 3), "a block has field 3 twice"),
        ('check all service("a");', (6,), lambda c: c + field(2, 0), "a check has two kinds"),
        ('check all service("a");', (6,), lambda c: without(c, 2) + field(2, 2**32 + 1), "enum value 4294967297"),
        ('check if service("a");', (6, 1), lambda q: q + field(1, part(q, 1)), "a rule has two heads"),
        ("check if {1, 2}.contains(1);", (6, 1, 3, 1), lambda op: op + op, "an operation holds no member or more"),
        ("check if 1 < 2;", (6, 1, 3, 1, 3), lambda kind: kind + kind, "an operation has field 1 twice"),
        ("check if [1, 2].contains(1);", (6, 1, 3, 1, 1, 9, 1), lambda t: t + field(6, 1), "a term holds no value"),
        (
            'check if {"a": 1}.get("a") == 1;',
            (6, 1, 3, 1, 1, 10, 1),
            lambda entry: entry + field(2, field(2, 7)),
            "a map entry has two values",
        ),
    ],
    ids=[
        "fact name",
        "term value",
        "block version",
        "check kind",
        "check kind beyond int32",
        "rule head",
        "operation member",
        "operation kind",
        "literal element",
        "map entry value",
    ],
)
def test_a_singular_field_that_occurs_twice_is_refused(
    authorizer: ca.ChitAuthorizer, source: str, path: tuple[int, ...], change: Callable[[bytes], bytes], reason: str
) -> None:
    token = mint()
    crafted = append_bytes(token, rewrite(last_block(append(token, source)), path, change))
    assert printed(crafted)  # the binding accepts it
    assert refused(authorizer, crafted).startswith("chit does not decode: " + reason)


def test_the_token_and_its_signed_blocks_hold_each_singular_field_once() -> None:
    raw = base64.urlsafe_b64decode(append(mint(root_key_id=1), TYPICAL))
    assert len(read_blocks(raw)) == 2
    for twice in (raw + field(1, 1), raw + field(2, part(raw, 2))):
        with pytest.raises(MalformedChitError, match="occurs twice"):
            outline(twice)
        with pytest.raises(MalformedChitError, match="occurs twice"):
            read_blocks(twice)
    block_twice = rewrite(raw, (3,), lambda signed: signed + field(1, part(signed, 1)))
    with pytest.raises(MalformedChitError, match="a signed block has field 1 twice"):
        read_blocks(block_twice)
