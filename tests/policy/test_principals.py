"""The Principal: decisions with reasons, ``*`` matching, ownership, the delegation chain."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from chit import Actor, InsufficientScopeError, InvalidTokenError, Principal
from chit.core.claims import AccessTokenClaims
from chit.errors import InvalidPermissionError
from chit.policy.decisions import Decision
from chit.policy.principals import actors_from_claim, principal_from_claims

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def make(permissions: set[str], *, subject: str = "usr_alice", actors: tuple[Actor, ...] = ()) -> Principal:
    return Principal(
        subject=subject,
        client_id="web",
        permissions=frozenset(permissions),
        expires_at=EXPIRES,
        actors=actors,
        token_id="jti-1",
    )


def test_can_matches_exact_and_wildcard_grants() -> None:
    p = make({"image-store:images:read", "tagging:*:read", "billing:invoices:*"})
    assert p.can("image-store:images:read")
    assert not p.can("image-store:images:write")
    assert p.can("tagging:tags:read")
    assert p.can("tagging:labels:read")
    assert not p.can("tagging:tags:write")
    assert p.can("billing:invoices:pay")
    assert not p.can("billing:refunds:pay")
    # a requested '*' needs a grant at least that wide
    assert not p.can("image-store:images:*")
    assert p.can("billing:invoices:*")


def test_malformed_grants_are_never_honoured_and_malformed_questions_raise() -> None:
    p = make({"image-store:images", "IMAGE-STORE:images:read", "*:images:read"})
    assert not p.can("image-store:images:read")
    with pytest.raises(InvalidPermissionError):
        p.can("image-store:images")


def test_require_raises_insufficient_scope_with_a_reason() -> None:
    p = make({"image-store:images:read"})
    p.require("image-store:images:read")
    with pytest.raises(InsufficientScopeError) as caught:
        p.require("image-store:images:delete")
    assert caught.value.reason == "missing image-store:images:delete; usr_alice (client web) may not delete"
    assert caught.value.status_code == 403
    assert caught.value.error == "insufficient_scope"


def test_denial_names_the_acting_service() -> None:
    p = make({"image-store:images:read"}, actors=(Actor("cli_tagging", "tagging"),))
    decision = p.check("image-store:images:delete")
    assert decision == Decision(
        False, "image-store:images:delete", "missing image-store:images:delete; acting service tagging may not delete"
    )
    assert not decision
    assert p.check("image-store:images:read")


def test_ownership() -> None:
    p = make({"image-store:images:read"})
    assert p.owns("usr_alice")
    assert not p.owns("usr_bob")
    p.require_owner("usr_alice")
    p.require_owner("usr_alice", unless="image-store:images:read-any")
    with pytest.raises(InsufficientScopeError, match=r"not the owner of the resource$"):
        p.require_owner("usr_bob")
    with pytest.raises(InsufficientScopeError) as caught:
        p.require_owner("usr_bob", unless="image-store:images:read-any")
    assert "missing image-store:images:read-any" in caught.value.reason
    assert "usr_bob" not in caught.value.reason  # the owner's id never reaches the caller
    admin = make({"image-store:images:read-any"}, subject="usr_admin")
    admin.require_owner("usr_bob", unless="image-store:images:read-any")
    assert admin.owns_or_can("usr_bob", "image-store:images:read-any")
    assert not p.owns_or_can("usr_bob", "image-store:images:read-any")


def test_every_require_decision_reaches_the_sink() -> None:
    seen: list[tuple[str, Decision]] = []
    p = dataclasses.replace(make({"a:b:c"}), on_decision=lambda principal, d: seen.append((principal.subject, d)))
    p.require("a:b:c")
    with pytest.raises(InsufficientScopeError):
        p.require("a:b:d")
    p.require_owner("usr_alice")
    assert [d.allowed for _, d in seen] == [True, False, True]
    assert seen[1][1].reason.startswith("missing a:b:d")
    assert p == make({"a:b:c"})  # the sink is not part of the value


def test_principal_is_frozen_and_needs_an_aware_expiry() -> None:
    p = make(set())
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.subject = "usr_mallory"  # type: ignore[misc]
    with pytest.raises(ValueError, match="aware"):
        Principal("s", "c", frozenset(), datetime(2030, 1, 1))


def test_actors_from_nested_act_outermost_first() -> None:
    act = {"sub": "cli_b", "client_id": "b", "act": {"sub": "cli_a", "client_id": "a"}}
    assert actors_from_claim(act) == (Actor("cli_b", "b"), Actor("cli_a", "a"))
    assert actors_from_claim({"sub": "cli_x"}) == (Actor("cli_x", None),)
    assert actors_from_claim(None) == ()


@pytest.mark.parametrize(
    "act",
    [
        {"client_id": "b"},
        {"sub": ""},
        {"sub": 7},
        {"sub": "x", "client_id": 3},
        {"sub": "x", "act": "y"},
        {"sub": "x", "act": [1]},
    ],
)
def test_malformed_act_is_an_invalid_token(act: dict[str, object]) -> None:
    with pytest.raises(InvalidTokenError, match="act"):
        actors_from_claim(act)


def test_delegation_chain_depth_is_capped() -> None:
    act: dict[str, object] | None = None
    for i in range(20):
        act = {"sub": f"s{i}", **({"act": act} if act else {})}
    with pytest.raises(InvalidTokenError, match="longer"):
        actors_from_claim(act)


def test_principal_from_claims() -> None:
    claims = AccessTokenClaims(
        iss="http://issuer",
        sub="usr_alice",
        aud=("image-store",),
        exp=1_900_000_000,
        iat=1_899_999_400,
        jti="j1",
        client_id="tagging",
        scope=("image-store:images:read",),
        act={"sub": "cli_t", "client_id": "tagging"},
        sid="rtf_1",
    )
    p = principal_from_claims(claims)
    assert p.subject == "usr_alice"
    assert p.client_id == "tagging"
    assert p.permissions == frozenset({"image-store:images:read"})
    assert isinstance(p.permissions, frozenset)
    assert p.actors == (Actor("cli_t", "tagging"),)
    assert p.actor == Actor("cli_t", "tagging")
    assert p.token_id == "j1"
    assert p.kind == "jwt"
    assert p.session_id == "rtf_1"
    assert p.expires_at == datetime.fromtimestamp(1_900_000_000, UTC)
    assert p.expires_at.tzinfo is UTC


def test_a_quiet_request_builds_no_allow_for_permissions_granted_word_for_word_and_refuses_alike() -> None:
    heard: list[Decision] = []
    p = dataclasses.replace(
        make({"image-store:images:read", "tagging:*:read"}), on_decision=lambda _p, decision: heard.append(decision)
    )
    assert p.for_request(["image-store:images:read"], quiet=True) is p
    assert heard == []
    p.for_request(["tagging:tags:read"], quiet=True)  # a wildcard grant: decided the long way, and told
    assert [(d.allowed, d.permission) for d in heard] == [(True, "tagging:tags:read")]
    with pytest.raises(InsufficientScopeError, match="image-store:images:delete"):
        p.for_request(["image-store:images:read", "image-store:images:delete"], quiet=True)
    assert [(d.allowed, d.permission) for d in heard[1:]] == [
        (True, "image-store:images:read"),
        (False, "image-store:images:delete"),
    ]
    p.for_request(["image-store:images:read"])
    assert heard[-1] == Decision(True, "image-store:images:read", "holds image-store:images:read")
