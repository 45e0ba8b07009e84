"""The pure ASGI middleware, on a plain Starlette app."""

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from chit.sdk import BearerAuthMiddleware, TokenVerifier, current_principal, principal_of
from chit.testing import TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DELETE = "image-store:images:delete"


async def image(request: Request) -> JSONResponse:
    principal = principal_of(request)
    if principal is None:
        return JSONResponse({"anonymous": True})
    principal.require(READ)
    return JSONResponse({"subject": principal.subject, "same": current_principal() is principal})


async def delete(request: Request) -> JSONResponse:
    principal = principal_of(request)
    assert principal is not None
    principal.require(DELETE)
    return JSONResponse({"deleted": True})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    principal = principal_of(websocket)
    await websocket.send_json({"subject": principal.subject if principal else None})
    await websocket.close()


def build(verifier: TokenVerifier, **options: bool) -> Starlette:
    middleware = Middleware(BearerAuthMiddleware, verifier=verifier, exempt_paths={"/healthz"}, **options)
    return Starlette(
        routes=[
            Route("/images/1", image),
            Route("/images/1", delete, methods=["DELETE"]),
            Route("/healthz", health),
            WebSocketRoute("/ws", socket),
        ],
        middleware=[middleware],
    )


@pytest.fixture
async def http(issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    app = build(issuer.verifier("image-store"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://image-store") as client:
        yield client


async def test_valid_token_reaches_the_app(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_a", [READ])
    response = await http.get("/images/1", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"subject": "usr_a", "same": True}


async def test_rfc_6750_answers(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    missing = await http.get("/images/1")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    empty = await http.get("/images/1", headers={"Authorization": "Bearer "})
    assert empty.status_code == 400
    assert empty.json()["error"] == "invalid_request"
    bad = await http.get("/images/1", headers={"Authorization": "Bearer a.b.c"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert bad.json()["error"] == "invalid_token"
    token = issuer.token("usr_a", [READ])
    twice = await http.get("/images/1", headers=[("Authorization", f"Bearer {token}")] * 2)
    assert twice.status_code == 400


async def test_an_auth_error_from_the_app_answers_403(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_a", [READ])
    response = await http.delete("/images/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert response.json()["error_description"].startswith(f"missing {DELETE}")


async def test_wrapping_a_whole_app_from_outside(issuer: TestIssuer) -> None:
    inner = Starlette(routes=[Route("/images/1", image)])
    app = BearerAuthMiddleware(inner, issuer.verifier("image-store"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/images/1")).status_code == 401
        token = issuer.token("usr_a", [READ])
        response = await client.get("/images/1", headers={"Authorization": f"Bearer {token}"})
        assert response.json() == {"subject": "usr_a", "same": True}


async def test_exempt_paths_and_optional_authentication(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"ok": True}
    app = build(issuer.verifier("image-store"), required=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/images/1")).json() == {"anonymous": True}
        bad = await client.get("/images/1", headers={"Authorization": "Bearer a.b.c"})
        assert bad.status_code == 401  # a bad token is refused even where none is needed


async def websocket_session(app: Starlette, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """Drive one WebSocket connection through the ASGI interface; the messages the app sent."""
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": headers,
        "subprotocols": [],
    }
    await app(scope, receive, send)
    return sent


async def test_websockets_are_authenticated(issuer: TestIssuer) -> None:
    app = build(issuer.verifier("image-store"))
    token = issuer.token("usr_a", [READ])
    sent = await websocket_session(app, [(b"authorization", f"Bearer {token}".encode())])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"subject":"usr_a"}'
    refused = await websocket_session(app, [])
    assert refused == [{"type": "websocket.close", "code": 1008, "reason": "no bearer token"}]
