"""Decision logging: one structured record per decision, through the standard logging module."""

import logging

import pytest

from chit import InsufficientScopeError, InvalidTokenError
from chit.sdk import DecisionLog
from chit.testing import TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DELETE = "image-store:images:delete"


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chit.decisions"]


async def test_allow_deny_and_reject_records_carry_the_chain(
    caplog: pytest.LogCaptureFixture, issuer: TestIssuer
) -> None:
    verifier = issuer.verifier("image-store")
    token = issuer.delegated_token("usr_alice", [READ], actors=["tagging", "ingest"], jti="j-1")
    caplog.set_level(logging.DEBUG, logger="chit.decisions")
    principal = await verifier.verify(token)
    principal.require(READ)
    with pytest.raises(InsufficientScopeError):
        principal.require(DELETE)
    with pytest.raises(InvalidTokenError):
        await verifier.verify("not-a-token")
    allow, deny, reject = records(caplog)
    assert (allow.levelno, deny.levelno, reject.levelno) == (logging.DEBUG, logging.INFO, logging.INFO)
    assert allow.decision == "allow"  # type: ignore[attr-defined]
    assert deny.decision == "deny"  # type: ignore[attr-defined]
    assert deny.subject == "usr_alice"  # type: ignore[attr-defined]
    assert deny.client_id == "tagging"  # type: ignore[attr-defined]
    assert deny.actors == ["tagging", "ingest"]  # type: ignore[attr-defined]
    assert deny.permission == DELETE  # type: ignore[attr-defined]
    assert deny.token_id == "j-1"  # type: ignore[attr-defined]
    assert deny.reason == f"missing {DELETE}; acting service tagging may not delete"  # type: ignore[attr-defined]
    assert deny.getMessage() == (
        f"deny {DELETE} for usr_alice via tagging <- ingest: missing {DELETE}; acting service tagging may not delete"
    )
    assert reject.decision == "reject"  # type: ignore[attr-defined]
    assert reject.subject is None  # type: ignore[attr-defined]
    assert reject.reason == "token is not a compact JWS"  # type: ignore[attr-defined]


async def test_levels_are_configurable_and_logging_can_be_off(
    caplog: pytest.LogCaptureFixture, issuer: TestIssuer
) -> None:
    caplog.set_level(logging.DEBUG)
    loud = issuer.verifier("image-store", decisions=DecisionLog("audit", allow_level=logging.WARNING))
    (await loud.verify(issuer.token("usr_a", [READ]))).require(READ)
    assert [(r.name, r.levelno) for r in caplog.records if r.name == "audit"] == [("audit", logging.WARNING)]
    caplog.clear()
    quiet = issuer.verifier("image-store", decisions=False)
    principal = await quiet.verify(issuer.token("usr_a", [READ]))
    principal.require(READ)
    with pytest.raises(InvalidTokenError):
        await quiet.verify("x")
    assert records(caplog) == []


async def test_disabled_levels_cost_no_record(caplog: pytest.LogCaptureFixture, issuer: TestIssuer) -> None:
    caplog.set_level(logging.WARNING, logger="chit.decisions")
    principal = await issuer.verifier("image-store").verify(issuer.token("usr_a", [READ]))
    principal.require(READ)
    assert records(caplog) == []
