"""What the FastAPI dependency does for a token seen before, in fewer steps: each step still decides as the
general one (``verify``, ``authorize``, ``bearer_token``) does, refusals and decision logging included."""

import logging

import httpx
import pytest
from fastapi import FastAPI, Security

import chit
from chit import InsufficientScopeError, InvalidTokenError, Principal, Verifier
from chit.errors import InvalidBearerRequestError, MissingTokenError
from chit.policy.decisions import Decision
from chit.sdk import RevokedTokens, authenticated, current_principal
from chit.sdk.verifier import BEARER_MEMORY, BEARER_MEMORY_BYTES
from chit.testing import Clock, TestIssuer, make_principal

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DELETE = "image-store:images:delete"


def decision_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chit.decisions"]


def headers(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"image-store"), *((b"authorization", value) for value in values)]


# --- verify_cached ----------------------------------------------------------------------------------


async def test_verify_cached_answers_only_for_a_token_verified_before(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_a", [READ])
    assert verifier.verify_cached(token) is None
    principal = await verifier.verify(token)
    assert verifier.verify_cached(token) is principal
    assert verifier.verify_cached(token[:-2] + "xx") is None  # a changed token is not the one verified


async def test_verify_cached_ends_at_expiry(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.token("usr_a", [READ], ttl=100)
    await verifier.verify(token)
    clock.advance(100 + verifier.leeway + 1)
    assert verifier.verify_cached(token) is None
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(token)


async def test_verify_cached_refuses_a_token_revoked_after_it_was_cached(issuer: TestIssuer) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    token = issuer.token("usr_a", [READ], jti="jti-1")
    await verifier.verify(token)
    revoked.revoke_token("jti-1")
    with pytest.raises(InvalidTokenError, match="revoked"):
        verifier.verify_cached(token)
    assert verifier.stats.refused["revoked"] == 1
    assert verifier.verify_cached(token) is None  # dropped from the cache: verify refuses it in full


async def test_verify_cached_without_a_cache_defers_to_verify(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store", cache_size=0)
    token = issuer.token("usr_a", [READ])
    await verifier.verify(token)
    assert verifier.verify_cached(token) is None


# --- authorize --------------------------------------------------------------------------------------


async def test_an_allowed_request_is_counted_and_logged_only_when_allows_are(
    caplog: pytest.LogCaptureFixture, issuer: TestIssuer
) -> None:
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(issuer.token("usr_a", [READ]))
    caplog.set_level(logging.INFO, logger="chit.decisions")
    assert verifier.authorize(principal, [READ]) is principal
    assert decision_records(caplog) == []
    caplog.set_level(logging.DEBUG, logger="chit.decisions")
    assert verifier.authorize(principal, [READ]) is principal
    (allow,) = decision_records(caplog)
    assert (allow.levelno, allow.decision, allow.permission) == (logging.DEBUG, "allow", READ)  # type: ignore[attr-defined]
    assert verifier.stats.allowed == 2


async def test_a_decision_sink_of_ones_own_hears_every_allow(issuer: TestIssuer) -> None:
    heard: list[tuple[str, Decision]] = []

    def sink(principal: Principal, decision: Decision) -> None:
        heard.append((principal.subject, decision))

    verifier = issuer.verifier("image-store", decisions=sink)
    principal = await verifier.verify(issuer.token("usr_a", [READ]))
    verifier.authorize(principal, [READ])
    assert [(subject, d.allowed, d.permission) for subject, d in heard] == [("usr_a", True, READ)]


async def test_a_missing_permission_is_refused_and_logged(caplog: pytest.LogCaptureFixture, issuer: TestIssuer) -> None:
    caplog.set_level(logging.INFO, logger="chit.decisions")
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(issuer.token("usr_a", [READ]))
    with pytest.raises(InsufficientScopeError, match=DELETE):
        verifier.authorize(principal, [READ, DELETE])
    assert [r.decision for r in decision_records(caplog)] == ["deny"]  # type: ignore[attr-defined]
    assert verifier.stats.refused["insufficient_scope"] == 1
    assert verifier.stats.allowed == 0


async def test_permissions_given_as_a_generator_are_all_required(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(issuer.token("usr_a", [READ]))
    with pytest.raises(InsufficientScopeError, match=DELETE):
        verifier.authorize(principal, (p for p in [DELETE]))  # the quick check must not spend it
    with pytest.raises(InsufficientScopeError, match=DELETE):
        verifier.authorize(principal, (p for p in [READ, DELETE]))
    assert verifier.authorize(principal, (p for p in [READ])) is principal


async def test_a_wildcard_grant_still_covers_the_route(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(issuer.token("usr_a", ["image-store:images:*"]))
    assert verifier.authorize(principal, [READ, DELETE]) is principal
    with pytest.raises(InsufficientScopeError):
        verifier.authorize(principal, ["image-store:albums:read"])


async def test_a_chit_held_word_for_word_still_runs_its_checks_on_the_short_way(
    caplog: pytest.LogCaptureFixture, issuer: TestIssuer
) -> None:
    verifier = issuer.verifier("image-store")
    root = issuer.root_key.public_key
    token = chit.attenuate(issuer.chit("usr_a", [READ]), method="GET", path="/images/*", public_keys=[root])
    principal = await verifier.verify(token)
    assert principal.holds_exactly([READ])
    caplog.set_level(logging.INFO, logger="chit.decisions")
    bound = verifier.authorize(principal, [READ], method="GET", path="/images/7")
    assert bound is principal.for_request([READ], method="GET", path="/images/7")  # the same binding
    assert decision_records(caplog) == []
    with pytest.raises(InsufficientScopeError, match='check if method\\("GET"\\)'):
        verifier.authorize(principal, [READ], method="DELETE", path="/images/7")
    with pytest.raises(InsufficientScopeError, match="starts_with"):
        verifier.authorize(principal, [READ], method="GET", path="/albums/7")
    assert [r.decision for r in decision_records(caplog)] == ["deny", "deny"]  # type: ignore[attr-defined]
    assert (verifier.stats.allowed, verifier.stats.refused["insufficient_scope"]) == (1, 2)


async def test_a_chits_allow_is_logged_when_allows_are(caplog: pytest.LogCaptureFixture, issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    principal = await verifier.verify(issuer.chit("usr_a", [READ]))
    caplog.set_level(logging.DEBUG, logger="chit.decisions")
    verifier.authorize(principal, [READ], method="GET", path="/images/7")
    (allow,) = decision_records(caplog)
    assert (allow.decision, allow.permission) == ("allow", READ)  # type: ignore[attr-defined]


def test_holds_exactly_is_only_the_quick_yes() -> None:
    principal = make_principal(permissions=[READ, "image-store:albums:*"])
    assert principal.holds_exactly([READ])
    assert principal.holds_exactly([])
    assert not principal.holds_exactly([READ, "image-store:albums:read"])  # a wildcard's: holds says yes
    assert principal.holds("image-store:albums:read")


# --- token_of ---------------------------------------------------------------------------------------


async def test_token_of_reads_the_header_as_bearer_token_does(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    for value in (b"Bearer abc.def", b"bearer abc.def", b"BEARER   abc.def  "):
        for _ in range(2):  # the second answer comes from memory
            assert verifier.token_of(headers(value)) == "abc.def"
    with pytest.raises(MissingTokenError):
        verifier.token_of(headers())
    with pytest.raises(MissingTokenError):
        verifier.token_of(headers(b"Basic dXNlcjpwYXNz"))
    with pytest.raises(InvalidBearerRequestError, match="empty"):
        verifier.token_of(headers(b"Bearer "))
    with pytest.raises(InvalidBearerRequestError, match="malformed"):
        verifier.token_of(headers(b"Bearer abc def"))


async def test_two_authorization_headers_are_refused_even_when_each_was_seen_alone(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    assert verifier.token_of(headers(b"Bearer one")) == "one"
    assert verifier.token_of(headers(b"Bearer two")) == "two"
    with pytest.raises(InvalidBearerRequestError, match="more than one"):
        verifier.token_of(headers(b"Bearer one", b"Bearer two"))
    with pytest.raises(InvalidBearerRequestError, match="more than one"):
        verifier.token_of(headers(b"Bearer one", b"Bearer one"))


async def test_token_of_remembers_a_bounded_number_of_values_no_longer_than_a_token(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store", max_token_size=64)
    too_long = b"Bearer " + b"a" * 65
    assert verifier.token_of(headers(too_long)) == "a" * 65  # still read; verification refuses its size
    assert too_long not in verifier._bearers
    for n in range(BEARER_MEMORY * 2 + 1):
        assert verifier.token_of(headers(b"Bearer t%d" % n)) == f"t{n}"
        assert len(verifier._bearers) <= BEARER_MEMORY


async def test_token_of_remembers_a_bounded_number_of_bytes(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")  # tokens up to 16 KiB
    for n in range(BEARER_MEMORY_BYTES // (16 * 1024) * 2):
        value = b"Bearer " + (b"%d." % n).ljust(16 * 1024, b"a")
        assert verifier.token_of(headers(value)) == value[7:].decode()
        assert sum(len(v) for v in verifier._bearers) <= BEARER_MEMORY_BYTES
    assert len(verifier._bearers) < BEARER_MEMORY_BYTES // (16 * 1024)


# --- the dependency -----------------------------------------------------------------------------------


def app_for(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/images/1")
    async def read(principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, object]:
        return {"subject": principal.subject, "bound": current_principal() is principal}

    return app


async def test_a_request_restores_the_binding_that_was_there_before(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    outer = await verifier.verify(issuer.token("usr_outer", [READ]))
    token = issuer.token("usr_a", [READ])
    transport = httpx.ASGITransport(app=app_for(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as http:
        with authenticated(outer, outer.token):
            for _ in range(2):  # verified, then from the cache
                response = await http.get("/images/1", headers={"Authorization": f"Bearer {token}"})
                assert response.json() == {"subject": "usr_a", "bound": True}
                assert current_principal() is outer
        assert current_principal() is None


async def test_a_token_revoked_after_it_was_cached_is_refused_by_the_route(issuer: TestIssuer) -> None:
    revoked = RevokedTokens()
    verifier = issuer.verifier("image-store", revocation=revoked)
    token = issuer.token("usr_a", [READ], jti="jti-9")
    transport = httpx.ASGITransport(app=app_for(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as http:
        assert (await http.get("/images/1", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        revoked.revoke_token("jti-9")
        response = await http.get("/images/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "token has been revoked" in response.headers["www-authenticate"]
    assert current_principal() is None
