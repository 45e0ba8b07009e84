"""A JWT and a chit carrying the same permissions decide the same on the same FastAPI routes (DESIGN §4, "Chits
on the wire"), as a property over random grants, route requirements, body decisions, owners and actors:
the same status and the same reason, owner checks included. The chit is tried as minted (decided without
datalog) and with an appended block that restricts nothing the route uses (decided by the authorizer)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI, Query, Security
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chit import Principal, Verifier
from chit.core.chit_authorizer import append, parse_for_attenuation, parse_root_keys, restriction
from chit.testing import Clock, TestIssuer

PERMISSIONS = [
    "image-store:images:read",
    "image-store:images:write",
    "image-store:images:delete",
    "image-store:images:read-any",
    "image-store:albums:read",
    "tagging:tags:write",
]
ROUTES = {  # path -> the permissions the route's dependency requires
    "/open": [],
    "/read": ["image-store:images:read"],
    "/manage": ["image-store:images:read", "image-store:images:delete"],
    "/albums": ["image-store:albums:read"],
}
SUBJECTS = ["usr_alice", "usr_bob"]


def build_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    def decide(
        principal: Principal, need: list[str], owner: str | None, unless: str | None, actor: str | None
    ) -> dict[str, Any]:
        for permission in need:
            principal.require(permission)
        if owner is not None:
            principal.require_owner(owner, unless=unless)
        if actor is not None:
            principal.require_actor(None, actor)
        return {"can": sorted(p for p in PERMISSIONS if principal.can(p)), "owns": principal.owns("usr_alice")}

    for path, scopes in ROUTES.items():

        async def route(
            principal: Principal = Security(verifier, scopes=scopes),
            need: list[str] = Query([]),
            owner: str | None = None,
            unless: str | None = None,
            actor: str | None = None,
        ) -> dict[str, Any]:
            return decide(principal, need, owner, unless, actor)

        app.add_api_route(path, route, methods=["GET"])
    return app


def neutral(issuer: TestIssuer, chit: str) -> str:
    """``chit`` with a block that every request to the image store passes: the datalog authorizer decides it."""
    keys = parse_root_keys(issuer.discovery()).candidates
    return append(parse_for_attenuation(chit, keys), restriction(service=["image-store", "tagging"], path="/*"))


async def answers(
    grant: list[str], subject: str, actors: list[str], path: str, params: dict[str, Any]
) -> list[tuple[int, Any]]:
    clock = Clock(1_800_000_000)
    issuer = TestIssuer(clock=clock)
    verifier = issuer.verifier("image-store")
    chit = issuer.chit(subject, grant, actors=actors)
    tokens = [issuer.token(subject, grant, actors=actors), chit, neutral(issuer, chit)]
    results: list[tuple[int, Any]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(verifier)), base_url="http://t") as http:
        for token in tokens:
            response = await http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
            results.append((response.status_code, response.json()))
    return results


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    grant=st.lists(st.sampled_from(PERMISSIONS), max_size=len(PERMISSIONS), unique=True),
    subject=st.sampled_from(SUBJECTS),
    actors=st.lists(st.sampled_from(["tagging", "cart"]), max_size=2, unique=True),
    path=st.sampled_from(sorted(ROUTES)),
    need=st.lists(st.sampled_from(PERMISSIONS), max_size=2, unique=True),
    owner=st.none() | st.sampled_from(SUBJECTS),
    unless=st.none() | st.sampled_from(PERMISSIONS),
    actor=st.none() | st.sampled_from(["tagging", "cart"]),
)
def test_a_jwt_and_a_chit_with_the_same_permissions_decide_the_same(
    grant: list[str],
    subject: str,
    actors: list[str],
    path: str,
    need: list[str],
    owner: str | None,
    unless: str | None,
    actor: str | None,
) -> None:
    params: dict[str, Any] = {"need": need}
    for name, value in (("owner", owner), ("unless", unless), ("actor", actor)):
        if value is not None:
            params[name] = value
    jwt, chit, attenuated = asyncio.run(answers(grant, subject, actors, path, params))
    assert jwt == chit
    assert jwt == attenuated
    event(f"status {jwt[0]}")
