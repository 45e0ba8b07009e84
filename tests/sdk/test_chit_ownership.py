"""``Principal.owns`` of a chit consults the chit's checks, as ``require_owner`` does: a chit its holder
narrowed to one resource, or to another owner, is not the owner of whatever a route body asks about
without naming the resource. A JWT, and a chit that only carries its permissions, decide as before."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Security

from chit import Principal, attenuate
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
IMAGES = {"img-7": "usr_alice", "img-9": "usr_alice", "img-3": "usr_bob"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer(clock=Clock(1_800_000_000))


@pytest.fixture
def app(issuer: TestIssuer) -> FastAPI:
    verifier = issuer.verifier("image-store")
    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
        if not principal.owns(IMAGES[image_id]):
            raise HTTPException(403)
        return {"id": image_id}

    return app


async def status(app: FastAPI, token: str, image_id: str) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        return (await client.get(f"/images/{image_id}", headers={"Authorization": f"Bearer {token}"})).status_code


async def test_a_chit_narrowed_to_one_resource_owns_nothing_a_route_asks_about_without_naming_it(
    app: FastAPI, issuer: TestIssuer
) -> None:
    alice = issuer.chit("usr_alice", [READ])
    only_img7 = attenuate(alice, resource="img-7", public_keys=[issuer.root_key.public_key])
    assert await status(app, only_img7, "img-9") == 403
    assert await status(app, only_img7, "img-7") == 403  # the route never names the resource: nothing is owned


async def test_a_chit_narrowed_to_another_owner_owns_nothing_of_its_subject(app: FastAPI, issuer: TestIssuer) -> None:
    alice = issuer.chit("usr_alice", [READ])
    bobs = attenuate(alice, datalog='check if owner("usr_bob");', public_keys=[issuer.root_key.public_key])
    assert await status(app, bobs, "img-9") == 403


async def test_a_chit_that_only_carries_its_permissions_owns_what_its_subject_owns(
    app: FastAPI, issuer: TestIssuer
) -> None:
    alice = issuer.chit("usr_alice", [READ])
    assert await status(app, alice, "img-9") == 200
    assert await status(app, alice, "img-3") == 403
    read_only = attenuate(alice, operations=[READ], public_keys=[issuer.root_key.public_key])
    assert await status(app, read_only, "img-9") == 200


async def test_a_jwt_owns_what_its_subject_owns(app: FastAPI, issuer: TestIssuer) -> None:
    token = issuer.token("usr_alice", [READ])
    assert await status(app, token, "img-9") == 200
    assert await status(app, token, "img-3") == 403
