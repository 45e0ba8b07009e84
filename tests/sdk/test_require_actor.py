"""Principal.require_actor: only the current actor of the RFC 8693 chain decides who may call."""

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Security

from chit import Actor, InsufficientScopeError, Principal, Verifier
from chit.policy.decisions import Decision
from chit.testing import TestIssuer, make_principal

READ = "image-store:images:read"


def refusal(principal: Principal, *service_ids: str | None) -> str:
    with pytest.raises(InsufficientScopeError) as caught:
        principal.require_actor(*service_ids)
    assert caught.value.status_code == 403
    assert caught.value.error == "insufficient_scope"
    return caught.value.reason


def test_the_subject_calling_itself_is_none() -> None:
    direct = make_principal("usr_alice", [READ])
    direct.require_actor(None)
    direct.require_actor(None, "tagging")
    assert refusal(direct, "tagging") == "nobody acts for the subject; allowed: tagging"
    assert refusal(direct, "tagging", "ingest") == "nobody acts for the subject; allowed: tagging, ingest"


def test_the_current_actor_must_be_named() -> None:
    delegated = make_principal("usr_alice", [READ], actors=["tagging"])
    delegated.require_actor("tagging")
    delegated.require_actor("image-store", "tagging")
    delegated.require_actor(None, "tagging")
    assert refusal(delegated, "image-store") == "acting for the subject: tagging; allowed: image-store"
    assert refusal(delegated, None) == "acting for the subject: tagging; only the subject itself may"
    assert refusal(delegated, None, "image-store") == (
        "acting for the subject: tagging; allowed: the subject itself, image-store"
    )


def test_earlier_actors_never_decide() -> None:
    chain = make_principal("usr_alice", [READ], actors=["tagging", "ingest"])
    chain.require_actor("tagging")
    assert refusal(chain, "ingest") == "acting for the subject: tagging; allowed: ingest"
    assert refusal(chain, None, "ingest").startswith("acting for the subject: tagging;")


def test_matches_the_client_id_else_the_subject_of_the_actor() -> None:
    by_client = make_principal("usr_alice", actors=[Actor("svc_7f3a", "tagging")])
    by_client.require_actor("tagging")
    assert refusal(by_client, "svc_7f3a") == "acting for the subject: tagging; allowed: svc_7f3a"
    by_subject = make_principal("usr_alice", actors=[Actor("tagging")])
    by_subject.require_actor("tagging")


def test_no_ids_or_a_wrong_type_is_a_type_error() -> None:
    principal = make_principal("usr_alice", actors=["tagging"])
    with pytest.raises(TypeError, match="at least one service id"):
        principal.require_actor()
    with pytest.raises(TypeError, match="string or None"):
        principal.require_actor(["tagging"])  # type: ignore[arg-type]


def test_every_decision_goes_to_on_decision() -> None:
    seen: list[tuple[Principal, Decision]] = []
    principal = dataclasses.replace(
        make_principal("usr_alice", actors=["tagging"]), on_decision=lambda p, d: seen.append((p, d))
    )
    principal.require_actor("tagging")
    with pytest.raises(InsufficientScopeError):
        principal.require_actor("image-store")
    assert [(p is principal, d) for p, d in seen] == [
        (True, Decision(True, None, "acting for the subject: tagging")),
        (True, Decision(False, None, "acting for the subject: tagging; allowed: image-store")),
    ]
    assert principal.check_actor("ingest") == Decision(False, None, "acting for the subject: tagging; allowed: ingest")
    assert len(seen) == 2  # check_actor only answers; require_actor enforces and reports


@pytest.mark.anyio
async def test_the_decision_log_names_the_refusal(caplog: pytest.LogCaptureFixture, issuer: TestIssuer) -> None:
    caplog.set_level(logging.INFO, logger="chit.decisions")
    principal = await issuer.verifier("image-store").verify(issuer.delegated_token("usr_alice", [READ], ["tagging"]))
    with pytest.raises(InsufficientScopeError):
        principal.require_actor("ingest")
    (record,) = [r for r in caplog.records if r.name == "chit.decisions"]
    assert record.getMessage() == "deny - for usr_alice via tagging: acting for the subject: tagging; allowed: ingest"


@pytest.fixture
async def http(issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    verifier: Verifier = issuer.verifier("image-store")
    app = FastAPI()

    @app.post("/images/{image_id}/tags")
    async def tag_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, Any]:
        principal.require_actor("tagging")
        return {"tagged": image_id, "for": principal.subject}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
        yield client


@pytest.mark.anyio
async def test_a_route_answers_403_insufficient_scope(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    tagging = issuer.delegated_token("usr_alice", [READ], ["tagging"])
    response = await http.post("/images/1/tags", headers={"Authorization": f"Bearer {tagging}"})
    assert response.status_code == 200
    assert response.json() == {"tagged": "1", "for": "usr_alice"}
    for token in (
        issuer.delegated_token("usr_alice", [READ], ["ingest", "tagging"]),
        issuer.token("usr_alice", [READ]),
    ):
        response = await http.post("/images/1/tags", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403
        assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
        assert "allowed: tagging" in response.json()["detail"]
