"""Chits on FastAPI and Starlette routes: attenuation narrows (operations, service, resource, method and path,
lifetime, raw datalog) and never widens; a failed check answers 403 naming it; checks that need the resource
wait for the route body's decisions and run there with the facts the decision states."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chit import InsufficientScopeError, Principal, Verifier, attenuate
from chit.sdk import BearerAuthMiddleware, principal_of
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
WRITE = "image-store:images:write"
DELETE = "image-store:images:delete"
READ_ANY = "image-store:images:read-any"
IMAGES = {"img-7": "usr_alice", "img-8": "usr_alice", "img-9": "usr_bob"}


@pytest.fixture
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier("image-store")


def build_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, Any]:
        principal.require_owner(IMAGES[image_id], unless=READ_ANY, resource=image_id)
        return {"id": image_id, "pending": list(principal.chit.pending) if principal.chit else []}

    @app.delete("/images/{image_id}")
    async def delete_image(image_id: str, principal: Principal = Security(verifier, scopes=[DELETE])) -> dict[str, str]:
        principal.require_owner(IMAGES[image_id], resource=image_id)
        return {"deleted": image_id}

    @app.put("/images/{image_id}")
    async def write_image(image_id: str, principal: Principal = Depends(verifier)) -> dict[str, str]:
        principal.require(WRITE, resource=image_id)  # the permission is decided in the body
        return {"written": image_id}

    @app.get("/albums")
    async def albums(principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, bool]:
        return {"can_delete": principal.can(DELETE), "can_delete_img_7": principal.can(DELETE, resource="img-7")}

    @app.get("/tagged/{image_id}")
    async def tagged(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
        principal.require_actor("tagging", resource=image_id)
        return {"id": image_id}

    return app


@pytest.fixture
async def http(verifier: Verifier) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
        yield client


@pytest.fixture
async def chit(issuer: TestIssuer, verifier: Verifier) -> str:
    token = issuer.chit("usr_alice", [READ, WRITE, DELETE])
    await verifier.verify(token)  # this process's verifier now holds the root key, as after a first request
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status(http: httpx.AsyncClient, method: str, path: str, token: str) -> tuple[int, str]:
    response = await http.request(method, path, headers=bearer(token))
    body = response.json()
    return response.status_code, str(body.get("detail", body))


async def test_an_unattenuated_chit_decides_like_its_permissions(http: httpx.AsyncClient, chit: str) -> None:
    assert (await status(http, "GET", "/images/img-7", chit))[0] == 200
    assert (await status(http, "DELETE", "/images/img-8", chit))[0] == 200
    assert await status(http, "GET", "/images/img-9", chit) == (
        403,
        f"not the owner of the resource and missing {READ_ANY}; usr_alice (client test-client) may not read-any",
    )


async def test_operations_narrow_and_name_the_failed_check(http: httpx.AsyncClient, chit: str, clock: Clock) -> None:
    read_only = attenuate(chit, operations=[READ], now=clock())
    assert (await status(http, "GET", "/images/img-7", read_only))[0] == 200
    code, reason = await status(http, "DELETE", "/images/img-7", read_only)
    assert code == 403
    assert reason == 'chit check failed: check all operation($op), {"image-store:images:read"}.contains($op) (block 1)'
    response = await http.delete("/images/img-7", headers=bearer(read_only))
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    # a permission decided in the route body is an operation too
    assert (await status(http, "PUT", "/images/img-7", read_only))[0] == 403
    assert (await status(http, "PUT", "/images/img-7", chit))[0] == 200


async def test_operations_also_narrow_to_the_services_they_name(
    issuer: TestIssuer, verifier: Verifier, clock: Clock
) -> None:
    token = issuer.chit("usr_alice", [READ, "payment:charges:create"])
    await verifier.verify(token)
    for_payment = attenuate(token, operations=["payment:charges:create"], now=clock())
    principal = await verifier.verify(for_payment)
    with pytest.raises(InsufficientScopeError, match="check if service"):
        verifier.authorize(principal, [], method="GET", path="/albums")


async def test_a_service_restriction_refuses_every_other_service(
    http: httpx.AsyncClient, chit: str, clock: Clock
) -> None:
    for_tagging = attenuate(chit, service="tagging", now=clock())
    assert await status(http, "GET", "/images/img-7", for_tagging) == (
        403,
        'chit check failed: check if service("tagging") (block 1)',
    )
    assert (await status(http, "GET", "/images/img-7", attenuate(chit, service="image-store", now=clock())))[0] == 200


async def test_a_resource_restriction_waits_for_the_route_body(
    http: httpx.AsyncClient, chit: str, clock: Clock
) -> None:
    one_image = attenuate(chit, resource="img-7", now=clock())
    response = await http.get("/images/img-7", headers=bearer(one_image))
    assert response.status_code == 200
    assert response.json()["pending"] == ['check if resource("img-7") (block 1)']
    assert await status(http, "GET", "/images/img-8", one_image) == (
        403,
        'chit check failed: check if resource("img-7") (block 1)',
    )
    assert (await status(http, "DELETE", "/images/img-8", one_image))[0] == 403
    assert (await status(http, "DELETE", "/images/img-7", one_image))[0] == 200
    assert (await status(http, "PUT", "/images/img-7", one_image))[0] == 200
    assert (await status(http, "PUT", "/images/img-8", one_image))[0] == 403


async def test_a_decision_that_names_no_resource_fails_a_resource_restriction(
    http: httpx.AsyncClient, chit: str, clock: Clock
) -> None:
    one_image = attenuate(chit, resource="img-7", now=clock())
    response = await http.get("/albums", headers=bearer(one_image))
    assert response.json() == {"can_delete": False, "can_delete_img_7": True}
    assert (await http.get("/albums", headers=bearer(chit))).json() == {"can_delete": True, "can_delete_img_7": True}


async def test_a_method_and_path_restriction_is_one_request(http: httpx.AsyncClient, chit: str, clock: Clock) -> None:
    one_request = attenuate(chit, method="get", path="/images/img-7", now=clock())
    assert (await status(http, "GET", "/images/img-7", one_request))[0] == 200
    assert await status(http, "GET", "/images/img-8", one_request) == (
        403,
        'chit check failed: check if path("/images/img-7") (block 1)',
    )
    assert await status(http, "DELETE", "/images/img-7", one_request) == (
        403,
        'chit check failed: check if method("GET") (block 1)',
    )
    prefix = attenuate(chit, path="/images/*", now=clock())
    assert (await status(http, "GET", "/images/img-8", prefix))[0] == 200
    assert (await status(http, "GET", "/albums", prefix))[0] == 403


async def test_a_shorter_lifetime_expires_the_chit(
    http: httpx.AsyncClient, chit: str, clock: Clock, verifier: Verifier
) -> None:
    short = attenuate(chit, ttl=30, now=clock())
    assert (await status(http, "GET", "/images/img-7", short))[0] == 200
    assert (await verifier.verify(short)).expires_at.timestamp() == clock() + 30
    clock.advance(31)
    assert await status(http, "GET", "/images/img-7", short) == (401, "token has expired")
    assert (await status(http, "GET", "/images/img-7", chit))[0] == 200


async def test_raw_datalog_restricts_like_any_block(http: httpx.AsyncClient, chit: str, clock: Clock) -> None:
    mine_only = attenuate(chit, datalog="check if owner($o), $o == {subject};".replace("{subject}", '"usr_alice"'))
    assert (await status(http, "GET", "/images/img-7", mine_only))[0] == 200
    assert await status(http, "GET", "/albums", mine_only) == (
        200,
        "{'can_delete': False, 'can_delete_img_7': False}",
    )
    with pytest.raises(ValueError, match="rules"):
        attenuate(chit, datalog='right("image-store:images:read-any") <- right($r);')
    with pytest.raises(ValueError, match="does not parse"):
        attenuate(chit, datalog="check if ((")


async def test_an_appended_block_that_adds_rights_gains_nothing(
    issuer: TestIssuer, http: httpx.AsyncClient, clock: Clock, verifier: Verifier
) -> None:
    reader = issuer.chit("usr_alice", [READ])
    await verifier.verify(reader)
    widened = attenuate(reader, datalog=f'right("{READ_ANY}"); right("{DELETE}"); check if true;', now=clock())
    principal = await verifier.verify(widened)
    assert principal.permissions == {READ}
    assert (await status(http, "GET", "/images/img-9", widened))[0] == 403
    assert await status(http, "DELETE", "/images/img-7", widened) == (
        403,
        f"missing {DELETE}; usr_alice (client test-client) may not delete",
    )


async def test_attenuation_only_narrows_whatever_is_stacked(http: httpx.AsyncClient, chit: str, clock: Clock) -> None:
    narrowed = attenuate(chit, operations=[READ], now=clock())
    widened_again = attenuate(narrowed, operations=[READ, DELETE], now=clock())
    assert (await status(http, "DELETE", "/images/img-7", widened_again))[0] == 403
    assert (await status(http, "GET", "/images/img-7", widened_again))[0] == 200


async def test_require_actor_runs_the_chit_checks(
    issuer: TestIssuer, verifier: Verifier, http: httpx.AsyncClient
) -> None:
    delegated = issuer.chit("usr_alice", [READ], actors=["tagging"])
    await verifier.verify(delegated)
    assert (await status(http, "GET", "/tagged/img-7", delegated))[0] == 200
    one_image = attenuate(delegated, resource="img-7", now=issuer.clock())
    assert (await status(http, "GET", "/tagged/img-7", one_image))[0] == 200
    assert (await status(http, "GET", "/tagged/img-8", one_image))[0] == 403
    assert (await status(http, "GET", "/tagged/img-7", issuer.chit("usr_alice", [READ])))[0] == 403


async def test_verify_alone_decides_with_the_service_and_time(issuer: TestIssuer, verifier: Verifier) -> None:
    token = issuer.chit("usr_alice", [READ, DELETE])
    principal = await verifier.verify(attenuate(token, operations=[READ], public_keys=[issuer.root_key.public_key]))
    assert principal.can(READ)
    assert not principal.can(DELETE)
    assert principal.check(DELETE).reason.startswith("chit check failed: check all operation")


# --- Starlette -------------------------------------------------------------------------------------------


async def test_the_middleware_runs_checks_with_method_and_path(issuer: TestIssuer, verifier: Verifier) -> None:
    async def image(request: Request) -> JSONResponse:
        principal = principal_of(request)
        assert principal is not None
        image_id = request.path_params["image_id"]
        principal.require(READ, resource=image_id)
        return JSONResponse({"id": image_id})

    app = Starlette(
        routes=[Route("/images/{image_id}", image, methods=["GET", "DELETE"])],
        middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)],
    )
    token = issuer.chit("usr_alice", [READ])
    await verifier.verify(token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
        get_only = attenuate(token, method="GET", resource="img-7", operations=[READ], now=issuer.clock())
        assert (await http.get("/images/img-7", headers=bearer(get_only))).status_code == 200
        wrong_image = await http.get("/images/img-8", headers=bearer(get_only))
        assert wrong_image.status_code == 403
        assert wrong_image.json()["error_description"] == 'chit check failed: check if resource("img-7") (block 1)'
        deleted = await http.delete("/images/img-7", headers=bearer(get_only))
        assert deleted.status_code == 403
        assert deleted.json()["error_description"] == 'chit check failed: check if method("GET") (block 1)'


async def test_a_check_on_operations_waits_only_when_the_route_names_none(
    http: httpx.AsyncClient, chit: str, clock: Clock
) -> None:
    write_only = attenuate(chit, datalog=f'check if operation("{WRITE}");', now=clock())
    assert (await status(http, "PUT", "/images/img-7", write_only))[0] == 200  # decided by require(WRITE)
    assert await status(http, "GET", "/images/img-7", write_only) == (
        403,
        f'chit check failed: check if operation("{WRITE}") (block 1)',
    )


async def test_refusals_are_logged_as_decisions(
    http: httpx.AsyncClient, chit: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="chit.decisions")
    await status(http, "GET", "/images/img-8", attenuate(chit, resource="img-7", now=clock()))
    denials = [r for r in caplog.records if getattr(r, "decision", None) == "deny"]
    assert denials
    assert denials[-1].reason == 'chit check failed: check if resource("img-7") (block 1)'  # type: ignore[attr-defined]
