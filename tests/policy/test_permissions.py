"""The permission grammar ``service:resource:action`` and its matching rules (chit.policy.permissions)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chit.errors import InvalidPermissionError
from chit.policy.permissions import (
    Permission,
    audience,
    covers_all,
    format_scope,
    intersect,
    is_covered,
    minimal,
    parse_all,
)


def p(text: str) -> Permission:
    return Permission.parse(text)


def ps(*texts: str) -> frozenset[Permission]:
    return frozenset(p(t) for t in texts)


# grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "image-store:images:read",
        "a:b:c",
        "svc:*:*",
        "svc:images:*",
        "svc:*:read",
        "0svc:1res:2act",
        "my.svc:my_res:do-it",
        "s" * 64 + ":" + "r" * 64 + ":" + "a" * 64,
        "chit:*:*",
    ],
)
def test_valid_names_parse_and_round_trip(text: str) -> None:
    perm = Permission.parse(text)
    assert str(perm) == text
    assert (perm.service, perm.resource, perm.action) == tuple(text.split(":"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("image-store:images", "expected service:resource:action"),
        ("image-store", "expected service:resource:action"),
        ("a:b:c:d", "expected service:resource:action"),
        ("", "expected service:resource:action"),
        ("svc::read", "the resource segment ''"),
        (":images:read", "the service segment ''"),
        ("svc:images:", "the action segment ''"),
        ("Svc:images:read", "the service segment 'Svc'"),
        ("svc:Images:read", "the resource segment 'Images'"),
        ("svc:images:READ", "the action segment 'READ'"),
        ("*:images:read", "the service segment cannot be '*'"),
        ("*:*:*", "the service segment cannot be '*'"),
        ("svc:" + "r" * 65 + ":read", "the resource segment"),
        ("s" * 65 + ":images:read", "the service segment"),
        ("svc:-images:read", "starting with a letter or digit"),
        ("svc:.images:read", "starting with a letter or digit"),
        ("svc:im ages:read", "the resource segment 'im ages'"),
        ("svc:images:re*d", "the action segment 're*d'"),
        ("svc:images:**", "the action segment '**'"),
        ("svc:imagés:read", "the resource segment"),
    ],
)
def test_invalid_names_are_refused_with_a_message_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidPermissionError) as info:
        Permission.parse(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_a_segment_of_exactly_64_characters_is_the_longest_accepted() -> None:
    assert Permission.parse("svc:" + "r" * 64 + ":read").resource == "r" * 64
    with pytest.raises(InvalidPermissionError, match="1-64 characters"):
        Permission.parse("svc:" + "r" * 65 + ":read")


@pytest.mark.parametrize("value", [None, 42, b"svc:images:read", ["svc", "images", "read"]])
def test_non_strings_are_refused(value: Any) -> None:
    with pytest.raises(InvalidPermissionError, match=f"a permission is a string, not {type(value).__name__}"):
        Permission.parse(value)


def test_invalid_permission_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="expected service:resource:action"):
        Permission.parse("nope")


def test_parse_all_parses_every_member_and_refuses_one_bad_member() -> None:
    assert parse_all(["a:b:c", "a:b:c", "x:*:*"]) == {Permission("a", "b", "c"), Permission("x", "*", "*")}
    with pytest.raises(InvalidPermissionError):
        parse_all(["a:b:c", "bad"])


# covers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "wanted", "expected"),
    [
        ("svc:images:read", "svc:images:read", True),
        ("svc:images:*", "svc:images:read", True),
        ("svc:*:read", "svc:images:read", True),
        ("svc:*:*", "svc:images:delete", True),
        ("svc:*:*", "svc:*:*", True),
        ("svc:images:read", "svc:images:write", False),
        ("svc:images:read", "svc:tags:read", False),
        ("svc:images:read", "other:images:read", False),
        ("svc:*:*", "other:images:read", False),
        # a requested '*' is matched only by a granted '*'
        ("svc:images:read", "svc:images:*", False),
        ("svc:images:*", "svc:*:read", False),
        ("svc:*:read", "svc:*:*", False),
        ("svc:images:*", "svc:images:*", True),
    ],
)
def test_covers(held: str, wanted: str, expected: bool) -> None:
    assert p(held).covers(p(wanted)) is expected


def test_is_covered_by_any_member() -> None:
    held = ps("svc:images:read", "other:*:*")
    assert is_covered(p("other:x:y"), held)
    assert is_covered(p("svc:images:read"), held)
    assert not is_covered(p("svc:images:write"), held)
    assert not is_covered(p("svc:images:read"), [])


# meet --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("svc:*:*", "svc:images:read", "svc:images:read"),
        ("svc:images:*", "svc:*:read", "svc:images:read"),
        ("svc:*:*", "svc:images:*", "svc:images:*"),
        ("svc:images:read", "svc:images:read", "svc:images:read"),
        ("svc:images:read", "svc:images:write", None),
        ("svc:images:*", "svc:tags:*", None),
        ("svc:*:*", "other:*:*", None),
    ],
)
def test_meet(a: str, b: str, expected: str | None) -> None:
    result = p(a).meet(p(b))
    assert (None if result is None else str(result)) == expected
    reverse = p(b).meet(p(a))
    assert (None if reverse is None else str(reverse)) == expected


# minimal / intersect / covers_all / audience -----------------------------------------------------


def test_minimal_drops_what_another_member_covers() -> None:
    assert minimal(ps("svc:*:*", "svc:images:read", "svc:images:*", "other:a:b")) == ps("svc:*:*", "other:a:b")
    assert minimal(ps("svc:images:read", "svc:images:write")) == ps("svc:images:read", "svc:images:write")
    assert minimal([]) == frozenset()


def test_intersect_without_cap_is_the_minimal_held_set() -> None:
    assert intersect(ps("svc:*:*", "svc:images:read"), None) == ps("svc:*:*")


def test_intersect_narrows_held_to_the_cap() -> None:
    held = ps("svc:*:*", "other:images:read")
    cap = ps("svc:images:read", "svc:tags:*", "other:images:*", "third:a:b")
    assert intersect(held, cap) == ps("svc:images:read", "svc:tags:*", "other:images:read")


def test_intersect_with_an_empty_cap_is_empty() -> None:
    assert intersect(ps("svc:*:*"), []) == frozenset()


def test_intersect_with_disjoint_sets_is_empty() -> None:
    assert intersect(ps("svc:images:read"), ps("svc:images:write", "other:*:*")) == frozenset()


def test_covers_all_lists_the_uncovered_members_sorted() -> None:
    held = ps("svc:images:*")
    wanted = ps("svc:images:read", "zeta:a:b", "svc:tags:read", "alpha:x:y")
    assert covers_all(held, wanted) == [p("alpha:x:y"), p("svc:tags:read"), p("zeta:a:b")]
    assert covers_all(held, ps("svc:images:read", "svc:images:*")) == []
    assert covers_all([], []) == []


def test_audience_names_each_service_once_sorted_and_chit_when_none() -> None:
    assert audience(ps("zeta:a:b", "alpha:x:y", "alpha:z:*")) == ["alpha", "zeta"]
    assert audience(ps("chit:*:*", "svc:a:b")) == ["chit", "svc"]
    assert audience([]) == ["chit"]


def test_format_scope_is_space_separated_and_sorted() -> None:
    assert format_scope(ps("b:x:y", "a:x:y")) == "a:x:y b:x:y"
    assert format_scope([]) == ""


# properties --------------------------------------------------------------------------------------

_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_REST = _FIRST + "._-"
names = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(alphabet=_REST, max_size=63))
# small alphabets so that generated permissions overlap often enough to be interesting
small = st.sampled_from(["a", "b", "c"])
services = st.one_of(small, names)
segments = st.one_of(st.just("*"), small, names)
permissions = st.builds(Permission, services, segments, segments)
close_permissions = st.builds(Permission, st.sampled_from(["s", "t"]), st.sampled_from(["*", "r", "q"]),
                              st.sampled_from(["*", "x", "y"]))  # fmt: skip
perm_sets = st.frozensets(close_permissions, max_size=6)


@given(permissions)
def test_parse_of_str_round_trips(perm: Permission) -> None:
    assert Permission.parse(str(perm)) == perm


@given(permissions)
def test_covers_is_reflexive(perm: Permission) -> None:
    assert perm.covers(perm)


@given(close_permissions, close_permissions, close_permissions)
def test_covers_is_transitive(a: Permission, b: Permission, c: Permission) -> None:
    if a.covers(b) and b.covers(c):
        assert a.covers(c)


@given(close_permissions, close_permissions)
def test_covers_both_ways_means_equal(a: Permission, b: Permission) -> None:
    if a.covers(b) and b.covers(a):
        assert a == b


def _concrete(perm: Permission) -> list[Permission]:
    """Every concrete-or-wildcard permission of the small universe that ``perm`` covers."""
    universe = [Permission(s, r, a) for s in ("s", "t") for r in ("*", "r", "q", "z") for a in ("*", "x", "y", "z")]
    return [u for u in universe if perm.covers(u)]


@given(close_permissions, close_permissions)
def test_meet_is_covered_by_both_and_none_iff_nothing_is_covered_by_both(a: Permission, b: Permission) -> None:
    met = a.meet(b)
    common = [u for u in _concrete(a) if b.covers(u)]
    if met is None:
        assert common == []
    else:
        assert a.covers(met)
        assert b.covers(met)
        # the meet is the widest: it covers everything both cover
        assert all(met.covers(u) for u in common)
    assert a.meet(b) == b.meet(a)


@given(permissions, permissions)
def test_meet_of_unrelated_permissions_is_covered_by_both(a: Permission, b: Permission) -> None:
    met = a.meet(b)
    if met is not None:
        assert a.covers(met)
        assert b.covers(met)
    if a.covers(b):
        assert met == b


@given(perm_sets, perm_sets)
def test_intersect_only_yields_what_some_held_and_some_cap_entry_cover(
    held: frozenset[Permission], cap: frozenset[Permission]
) -> None:
    result = intersect(held, cap)
    for r in result:
        assert any(h.covers(r) for h in held)
        assert any(c.covers(r) for c in cap)
    # and loses nothing: whatever both a held and a cap entry cover is covered by the result
    for h in held:
        for c in cap:
            for u in _concrete(h):
                if c.covers(u):
                    assert is_covered(u, result)


@given(perm_sets)
def test_minimal_covers_the_same_and_has_no_redundant_member(perms: frozenset[Permission]) -> None:
    result = minimal(perms)
    assert result <= perms
    assert all(is_covered(q, result) for q in perms)
    assert not any(a != b and a.covers(b) for a in result for b in result)


@given(perm_sets, perm_sets)
def test_covers_all_returns_exactly_the_uncovered(held: frozenset[Permission], wanted: frozenset[Permission]) -> None:
    missing = covers_all(held, wanted)
    assert missing == sorted(missing)
    assert set(missing) == {w for w in wanted if not is_covered(w, held)}


# chit's own permissions: a fixed set, checked like a service's (chit.policy.administration) ------


@pytest.mark.parametrize(
    "text",
    [
        "chit:api-keys:exchange",
        "chit:audit:read",
        "chit:*:*",
        "chit:users:*",
        "chit:*:read",
        "chit:*:admin",
        "chit:service.image-store:admin",
        "chit:service.image-store:*",
    ],
)
def test_every_documented_chit_permission_and_wildcards_over_them_are_defined(text: str) -> None:
    from chit.policy.administration import undefined

    assert undefined([p(text)], [], ["image-store"]) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "chit:api-keys:exchnge",
            "chit:api-keys:exchnge: no such chit permission; did you mean chit:api-keys:exchange?",
        ),
        ("chit:users:raed", "chit:users:raed: no such chit permission; did you mean chit:users:read?"),
        ("chit:user:read", "chit:user:read: no such chit permission; did you mean chit:users:read?"),
        (
            "chit:service.imag-store:admin",
            "chit:service.imag-store:admin: no registered service 'imag-store'; did you mean image-store?",
        ),
    ],
)
def test_an_unknown_chit_permission_is_undefined_with_the_closest_name(text: str, problem: str) -> None:
    from chit.policy.administration import undefined

    assert undefined([p(text)], [], ["image-store"]) == [problem]


@pytest.mark.parametrize("text", ["chit:bogus:thing", "chit:bogus:*", "chit:*:frob"])
def test_a_chit_permission_far_from_any_lists_chits_resources(text: str) -> None:
    from chit.policy.administration import undefined

    [problem] = undefined([p(text)], [], [])
    assert problem.startswith(f"{text}: no such chit permission (chit:RESOURCE:ACTION, RESOURCE one of users, ")


def test_chit_permissions_lists_the_documented_set_and_each_registered_services_admin() -> None:
    from chit.policy.administration import CHIT_PERMISSIONS, chit_permissions

    assert chit_permissions(["b", "a"]) == [*CHIT_PERMISSIONS, "chit:service.a:admin", "chit:service.b:admin"]
    assert all(p(name).service == "chit" and "*" not in name for name in CHIT_PERMISSIONS)


@given(perm_sets, perm_sets)
def test_intersect_and_minimal_are_their_pairwise_definitions(
    held: frozenset[Permission], cap: frozenset[Permission]
) -> None:
    # the definitions, pair by pair: ``intersect`` and ``minimal`` skip the pairs that cannot matter
    met = {m for h in held for c in cap if (m := h.meet(c)) is not None}
    reference = frozenset(q for q in met if not any(o != q and o.covers(q) for o in met))
    assert intersect(held, cap) == reference
    assert minimal(met) == reference
    assert minimal(held) == frozenset(q for q in held if not any(o != q and o.covers(q) for o in held))
