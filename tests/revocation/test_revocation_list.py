"""RevocationList: what each kind of feed event refuses, how long it stays, and what the check costs."""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chit.policy.principals import Actor, Principal
from chit.revocation import RevocationCheck, RevocationEvent, RevocationList
from chit.sdk import RevocationList as SdkRevocationList
from chit.testing import Clock

NOW = 1_800_000_000
TTL = 600


class Blocks:
    """The chit checks a principal carries, reduced to what revocation reads: its blocks' revocation ids."""

    def __init__(self, *revocation_ids: str) -> None:
        self.revocation_ids = revocation_ids


def jwt(
    *,
    subject: str = "usr_alice",
    client_id: str = "photos",
    token_id: str = "jti-1",  # noqa: S107
    session_id: str | None = None,
    issued_at: int = NOW,
    actors: tuple[Actor, ...] = (),
) -> Principal:
    return Principal(
        subject=subject,
        client_id=client_id,
        permissions=frozenset({"image-store:images:read"}),
        expires_at=datetime.fromtimestamp(issued_at + TTL, UTC),
        actors=actors,
        token_id=token_id,
        session_id=session_id,
        issued_at=issued_at,
    )


def chit(
    *revocation_ids: str,
    subject: str = "usr_alice",
    client_id: str = "photos",
    expires: int = NOW + TTL,
    session_id: str | None = None,
) -> Principal:
    return Principal(
        subject=subject,
        client_id=client_id,
        permissions=frozenset({"image-store:images:read"}),
        expires_at=datetime.fromtimestamp(expires, UTC),
        token_id=revocation_ids[0],
        kind="chit",
        session_id=session_id,
        chit=Blocks(*revocation_ids),  # type: ignore[arg-type]
    )


def event(
    event_id: int, kind: str, value: str, *, expires: int = NOW + TTL, not_before: int | None = None
) -> dict[str, Any]:
    return {"id": event_id, "kind": kind, "value": value, "not_before": not_before, "expires": expires}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def revoked(clock: Clock) -> RevocationList:
    return RevocationList(clock=clock)


def test_the_list_is_a_revocation_check_and_the_sdk_s() -> None:
    assert SdkRevocationList is RevocationList
    assert isinstance(RevocationList(), RevocationCheck)


def test_a_token_event_refuses_that_jti_only(revoked: RevocationList) -> None:
    assert revoked.apply(event(1, "token", "jti-1"))
    assert revoked.revokes(jwt(token_id="jti-1"))
    assert not revoked.revokes(jwt(token_id="jti-2"))
    assert revoked.size == 1


@pytest.mark.parametrize(("kind", "sid"), [("session", "rtf_1"), ("session", "key_1"), ("delegation", "dlg_1")])
def test_a_session_api_key_or_delegation_refuses_every_token_carrying_it_as_sid(
    revoked: RevocationList, kind: str, sid: str
) -> None:
    revoked.apply(event(1, kind, sid))
    assert revoked.revokes(jwt(token_id="a", session_id=sid))
    assert revoked.revokes(jwt(token_id="b", session_id=sid))
    assert not revoked.revokes(jwt(token_id="c", session_id="rtf_other"))
    assert not revoked.revokes(jwt(token_id="d"))


@pytest.mark.parametrize(("kind", "sid"), [("session", "rtf_1"), ("session", "key_1"), ("delegation", "dlg_1")])
def test_a_session_api_key_or_delegation_refuses_the_chits_minted_from_it(
    revoked: RevocationList, kind: str, sid: str
) -> None:
    revoked.apply(event(1, kind, sid))
    assert revoked.revokes(chit("a" * 128, session_id=sid))
    assert revoked.revokes(chit("a" * 128, "b" * 128, session_id=sid))  # attenuated: the session is its root's
    assert not revoked.revokes(chit("c" * 128, session_id="rtf_other"))
    assert not revoked.revokes(chit("d" * 128))


def test_a_chit_is_refused_when_any_of_its_blocks_is_revoked(revoked: RevocationList) -> None:
    revoked.apply(event(1, "chit", "b" * 128))
    assert revoked.revokes(chit("a" * 128, "b" * 128))  # attenuated from the revoked one
    assert revoked.revokes(chit("b" * 128))
    assert not revoked.revokes(chit("a" * 128))  # the one it was attenuated from
    assert not revoked.revokes(chit("a" * 128, "c" * 128))  # a sibling branch


def test_a_subject_event_refuses_jwts_issued_before_not_before(revoked: RevocationList) -> None:
    revoked.apply(event(1, "subject", "usr_alice", not_before=NOW, expires=NOW + TTL))
    assert revoked.revokes(jwt(issued_at=NOW - 1))
    assert not revoked.revokes(jwt(issued_at=NOW))  # issued at or after the revocation: a new login
    assert not revoked.revokes(jwt(subject="usr_bob", issued_at=NOW - 1))


def test_a_subject_event_refuses_that_subject_s_chits_expiring_before_it(revoked: RevocationList) -> None:
    """A chit has no issue time: one that expires before the event does was (conservatively) issued before it."""
    revoked.apply(event(1, "subject", "usr_alice", not_before=NOW, expires=NOW + TTL))
    assert revoked.revokes(chit("a" * 128, expires=NOW + TTL - 1))
    assert not revoked.revokes(chit("a" * 128, expires=NOW + TTL + 1))
    assert not revoked.revokes(chit("a" * 128, subject="usr_bob", expires=NOW + 1))


def test_a_client_event_refuses_its_tokens_and_those_it_acts_in(revoked: RevocationList) -> None:
    revoked.apply(event(1, "client", "tagging", not_before=NOW, expires=NOW + TTL))
    assert revoked.revokes(jwt(client_id="tagging", issued_at=NOW - 5))
    acting = (Actor("svc_tagging", "tagging"),)
    assert revoked.revokes(jwt(client_id="photos", actors=acting, issued_at=NOW - 5))
    deeper = (Actor("svc_search", "search"), Actor("svc_tagging", "tagging"))
    assert revoked.revokes(jwt(client_id="photos", actors=deeper, issued_at=NOW - 5))
    assert not revoked.revokes(jwt(client_id="tagging", issued_at=NOW))
    assert not revoked.revokes(jwt(client_id="photos", issued_at=NOW - 5))
    assert revoked.revokes(chit("a" * 128, client_id="tagging", expires=NOW + 10))


def test_an_event_without_not_before_revokes_everything_of_its_subject(revoked: RevocationList) -> None:
    revoked.apply(event(1, "subject", "usr_alice", expires=NOW + TTL))
    assert revoked.revokes(jwt(issued_at=NOW + 5))


def test_later_revocations_of_a_subject_cover_earlier_ones(revoked: RevocationList) -> None:
    revoked.apply(event(2, "subject", "usr_alice", not_before=NOW + 100, expires=NOW + 100 + TTL))
    assert not revoked.apply(event(1, "subject", "usr_alice", not_before=NOW, expires=NOW + TTL))
    assert revoked.revokes(jwt(issued_at=NOW + 50))
    assert revoked.size == 1


def test_a_key_event_is_kept_and_told_to_the_listeners(revoked: RevocationList) -> None:
    heard: list[str] = []
    revoked.key_listeners.append(heard.append)
    revoked.apply(event(1, "key", "kid-2024"))
    revoked.apply(event(1, "key", "kid-2024"))
    assert heard == ["kid-2024"]  # once: applying again changes nothing
    assert revoked.revoked_keys == {"kid-2024"}
    assert not revoked.revokes(jwt())  # a principal does not name its key: the key clients refuse it


def test_applying_is_idempotent_and_takes_the_dataclass_too(revoked: RevocationList) -> None:
    assert revoked.apply(RevocationEvent(1, "token", "jti-1", NOW + TTL))
    assert not revoked.apply(event(1, "token", "jti-1"))
    assert not revoked.apply(RevocationEvent(1, "token", "jti-1", NOW + TTL))
    assert revoked.size == 1
    assert revoked.applied == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"id": 0, "kind": "token", "value": "j", "expires": NOW},
        {"id": True, "kind": "token", "value": "j", "expires": NOW},
        {"id": 1, "kind": "everything", "value": "j", "expires": NOW},
        {"id": 1, "kind": "token", "value": "", "expires": NOW},
        {"id": 1, "kind": "token", "value": "j", "expires": "soon"},
        {"id": 1, "kind": "subject", "value": "u", "expires": NOW, "not_before": 1.5},
        {"id": 1, "kind": "token", "value": "j"},
    ],
)
def test_a_malformed_event_is_refused(revoked: RevocationList, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="revocation event"):
        revoked.apply(bad)
    assert revoked.size == 0


def test_entries_leave_once_their_event_expires(revoked: RevocationList, clock: Clock) -> None:
    revoked.apply(event(1, "token", "jti-1", expires=NOW + 10))
    revoked.apply(event(2, "session", "rtf_1", expires=NOW + 20))
    revoked.apply(event(3, "subject", "usr_alice", not_before=NOW, expires=NOW + 30))
    revoked.apply(event(4, "client", "tagging", not_before=NOW, expires=NOW + 30))
    revoked.apply(event(5, "chit", "c" * 128, expires=NOW + 30))
    assert revoked.size == 5
    clock.advance(15)
    assert revoked.prune() == 1
    assert not revoked.revokes(jwt(token_id="jti-1"))
    clock.advance(100)
    assert revoked.prune() == 4
    assert revoked.size == 0
    assert not revoked.apply(event(6, "token", "jti-6", expires=NOW))  # expired already: nothing to keep


def test_grace_keeps_entries_as_long_as_the_verifier_s_leeway(clock: Clock) -> None:
    revoked = RevocationList(grace=30, clock=clock)
    revoked.apply(event(1, "token", "jti-1", expires=NOW + 10))
    clock.advance(35)
    assert revoked.prune() == 0
    assert revoked.revokes(jwt(token_id="jti-1"))  # still accepted by a verifier with 30 s of leeway
    clock.advance(10)
    assert revoked.prune() == 1


def test_a_renewed_entry_outlives_its_first_expiry(revoked: RevocationList, clock: Clock) -> None:
    revoked.apply(event(1, "session", "rtf_1", expires=NOW + 10))
    revoked.apply(event(2, "session", "rtf_1", expires=NOW + 100))
    clock.advance(50)
    revoked.prune()
    assert revoked.revokes(jwt(session_id="rtf_1"))
    assert revoked.size == 1


def test_applying_prunes_at_most_once_a_second(revoked: RevocationList, clock: Clock) -> None:
    revoked.apply(event(1, "token", "jti-1", expires=NOW + 1))
    clock.advance(5)
    revoked.apply(event(2, "token", "jti-2"))  # a second has passed: the expired entry goes
    assert revoked.size == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["token", "session", "delegation", "chit", "subject", "client", "key"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(NOW - 50, NOW + 50),
        ),
        max_size=30,
    ),
    st.integers(0, 120),
)
def test_the_list_matches_a_plain_model_whatever_the_order_and_the_time(
    events: list[tuple[str, str, int]], later: int
) -> None:
    """After any events and any pruning, a value is listed exactly while one of its events has not expired."""
    clock = Clock(NOW)
    revoked = RevocationList(clock=clock)
    for index, (kind, value, expires) in enumerate(events, start=1):
        revoked.apply(event(index, kind, value, expires=expires, not_before=NOW))
    clock.advance(later)
    revoked.prune()
    now = NOW + later
    for value in "abc":
        alive = {
            ("session" if kind == "delegation" else kind)
            for kind, v, expires in events
            if v == value and expires >= now and expires >= NOW  # expired when applied: never kept
        }
        assert revoked.revokes(jwt(token_id=value)) == ("token" in alive)
        assert revoked.revokes(jwt(token_id="x", session_id=value)) == ("session" in alive)
        assert revoked.revokes(chit(value)) == ("chit" in alive)
        assert revoked.revokes(jwt(token_id="x", subject=value, issued_at=NOW - 1)) == ("subject" in alive)
        assert revoked.revokes(jwt(token_id="x", client_id=value, issued_at=NOW - 1)) == ("client" in alive)
        assert (value in revoked.revoked_keys) == ("key" in alive)


def test_100k_entries_cost_well_under_a_microsecond_per_check_and_leave_when_expired(
    revoked: RevocationList, clock: Clock
) -> None:
    for index in range(100_000):
        kind = ("token", "session", "chit")[index % 3]
        revoked.apply(RevocationEvent(index + 1, kind, f"{kind}-{index}", NOW + 60 + index % 600))
    assert revoked.size == 100_000
    passing = jwt(token_id="jti-fresh", session_id="rtf_fresh")
    refused = jwt(token_id="token-99999")
    assert revoked.revokes(refused)
    assert not revoked.revokes(passing)
    check = revoked.revokes
    best = min(timeit.repeat(lambda: check(passing), number=20_000, repeat=5)) / 20_000
    assert best < 1e-6, f"{best * 1e9:.0f} ns per check"
    clock.advance(60 + 600 + 1)
    assert revoked.prune() == 100_000
    assert revoked.size == 0
