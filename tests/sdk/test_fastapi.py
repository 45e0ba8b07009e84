"""The FastAPI adapter: RFC 6750 answers, route scopes, errors from the route body, OpenAPI, context."""

import inspect
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Security
from starlette.requests import Request

from chit import InsufficientScopeError, Principal, Verifier
from chit.errors import AuthError
from chit.sdk import auth_error_handler, current_principal, current_token
from chit.sdk.fastapi import HTTPInsufficientScopeError
from chit.testing import TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DELETE = "image-store:images:delete"
READ_ANY = "image-store:images:read-any"
IMAGES = {"1": "usr_alice", "2": "usr_bob"}


@pytest.fixture
def issuer_url() -> str:
    return "http://127.0.0.1:8700"  # the DESIGN's example issuer, which the OpenAPI tests below name


@pytest.fixture
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier("image-store")


def build_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, Any]:
        principal.require_owner(IMAGES[image_id], unless=READ_ANY)
        return {"id": image_id, "owner": IMAGES[image_id]}

    @app.get("/sync/images/{image_id}")
    def read_image_sync(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, Any]:
        principal.require_owner(IMAGES[image_id], unless=READ_ANY)
        return {"id": image_id, "seen_by": current_principal() == principal}

    @app.delete("/images/{image_id}")
    async def delete_image(
        image_id: str,
        principal: Principal = Security(verifier, scopes=[READ, DELETE]),
    ) -> dict[str, str]:
        return {"deleted": image_id}

    @app.post("/images/{image_id}/check")
    async def check(image_id: str, principal: Principal = Depends(verifier)) -> dict[str, str]:
        _nested_rule(principal)
        return {"ok": image_id}

    @app.get("/whoami")
    async def whoami(principal: Principal = Depends(verifier)) -> dict[str, Any]:
        return {"subject": principal.subject, "same": current_principal() is principal, "token": current_token()}

    @app.get("/missing")
    async def missing(principal: Principal = Depends(verifier)) -> dict[str, str]:
        raise HTTPException(404, "no such image")

    @app.get("/broken")
    async def broken(principal: Principal = Depends(verifier)) -> dict[str, str]:
        raise ValueError("a bug in the route")

    @app.get("/images/{image_id}/or-public")
    async def read_or_public(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, Any]:
        try:
            principal.require_owner(IMAGES[image_id])
        except InsufficientScopeError as refusal:
            return {"id": image_id, "public": True, "why": str(refusal)}
        return {"id": image_id, "public": False}

    @app.get("/images/{image_id}/then-fails")
    async def then_fails(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> None:
        raise InsufficientScopeError("raised by the route itself")

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"public": "yes"}

    return app


def _nested_rule(principal: Principal) -> None:
    principal.require(DELETE)


@pytest.fixture(params=["no setup", "with the AuthError handler"])
async def http(verifier: Verifier, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """Every answer is the same with a plain ``FastAPI()`` and with the documented line of setup."""
    app = build_app(verifier)
    if request.param == "with the AuthError handler":
        app.add_exception_handler(AuthError, auth_error_handler)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
        yield client


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


async def test_owner_reads_own_image(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/images/1", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"id": "1", "owner": "usr_alice"}


async def test_require_owner_in_the_route_body_answers_403_like_the_dependency(
    issuer: TestIssuer, http: httpx.AsyncClient
) -> None:
    token = issuer.token("usr_alice", [READ])
    for path in ("/images/2", "/sync/images/2"):
        response = await http.get(path, headers=bearer(token))
        assert response.status_code == 403, (path, response.text)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope", error_description="not the owner')
        assert READ_ANY in response.json()["detail"]
    holder = issuer.token("usr_carol", [READ, READ_ANY])
    assert (await http.get("/images/2", headers=bearer(holder))).status_code == 200
    assert (await http.get("/sync/images/2", headers=bearer(holder))).json() == {"id": "2", "seen_by": True}


async def test_missing_route_scope_is_403_insufficient_scope_with_the_scope(
    issuer: TestIssuer, http: httpx.AsyncClient
) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.delete("/images/1", headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", error_description="missing image-store:images:delete; '
        'usr_alice (client test-client) may not delete", scope="image-store:images:read image-store:images:delete"'
    )
    both = issuer.token("usr_alice", [READ, DELETE])
    assert (await http.delete("/images/1", headers=bearer(both))).status_code == 200
    wildcard = issuer.token("usr_alice", ["image-store:images:*"])
    assert (await http.delete("/images/1", headers=bearer(wildcard))).status_code == 200


async def test_a_rule_deep_in_the_route_answers_403(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    delegated = issuer.delegated_token("usr_alice", [READ], actors=["tagging"])
    response = await http.post("/images/1/check", headers=bearer(delegated))
    assert response.status_code == 403
    assert response.json()["detail"] == f"missing {DELETE}; acting service tagging may not delete"


async def test_no_credentials_is_401_with_a_bare_challenge(http: httpx.AsyncClient) -> None:
    response = await http.get("/images/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_another_scheme_counts_as_no_credentials(http: httpx.AsyncClient) -> None:
    response = await http.get("/images/1", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_scheme_is_case_insensitive(scheme: str, issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    assert (await http.get("/images/1", headers=bearer(token, scheme))).status_code == 200


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", "bearer\t"])
async def test_empty_bearer_value_is_400_invalid_request(value: str, http: httpx.AsyncClient) -> None:
    response = await http.get("/images/1", headers={"Authorization": value})
    assert response.status_code == 400
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


async def test_two_authorization_headers_are_400_invalid_request(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = await http.get("/images/1", headers=headers)
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_a_token_with_spaces_is_400(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    response = await http.get("/images/1", headers={"Authorization": "Bearer abc def"})
    assert response.status_code == 400


async def test_a_token_in_the_query_string_or_body_is_never_read(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/images/1", params={"access_token": token})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    response = await http.post("/images/1/check", data={"access_token": token})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_invalid_token_is_401_with_the_reason(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    expired = issuer.token("usr_alice", [READ], ttl=-3600)
    response = await http.get("/images/1", headers=bearer(expired))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="token has expired"'
    assert response.json() == {"detail": "token has expired"}


async def test_other_errors_of_the_route_pass_through(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/missing", headers=bearer(token))
    assert response.status_code == 404
    assert response.json() == {"detail": "no such image"}
    assert "www-authenticate" not in response.headers
    assert (await http.get("/broken", headers=bearer(token))).status_code == 500


async def test_principal_and_token_are_in_the_context_during_the_request(
    issuer: TestIssuer, http: httpx.AsyncClient
) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/whoami", headers=bearer(token))
    assert response.json() == {"subject": "usr_alice", "same": True, "token": token}
    assert current_principal() is None
    assert current_token() is None


async def test_keys_unavailable_is_503_not_401(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    issuer.down = True
    response = await http.get("/images/1", headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    issuer.down = False
    issuer.clock.advance(1)
    assert (await http.get("/images/1", headers=bearer(token))).status_code == 200


def test_openapi_has_an_oauth2_scheme_and_each_route_s_permissions(issuer: TestIssuer, verifier: Verifier) -> None:
    issuer.down = True  # the OpenAPI must not need the auth server
    schema = build_app(verifier).openapi()
    assert issuer.requests == []
    scheme = schema["components"]["securitySchemes"]["chit"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["clientCredentials"]["tokenUrl"] == "http://127.0.0.1:8700/oauth2/token"
    assert scheme["flows"]["password"]["tokenUrl"] == "http://127.0.0.1:8700/oauth2/token"
    paths = schema["paths"]
    assert paths["/images/{image_id}"]["get"]["security"] == [{"chit": [READ]}]
    assert paths["/images/{image_id}"]["delete"]["security"] == [{"chit": [READ, DELETE]}]
    assert paths["/whoami"]["get"]["security"] == [{"chit": []}]
    assert "security" not in paths["/public"]["get"]
    parameters = paths["/images/{image_id}"]["get"].get("parameters", [])
    assert [p["name"] for p in parameters] == ["image_id"]  # nothing of the dependency leaks in


def test_scheme_name_scopes_and_token_url_can_be_set(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    custom = Verifier(
        "http://127.0.0.1:8700",
        "image-store",
        scheme_name="auth",
        scopes={READ: "Read images"},
        token_url="https://auth.example/token",
    )
    app = FastAPI()

    @app.get("/a")
    async def a(principal: Principal = Security(custom, scopes=[READ])) -> None:
        return None

    schema = app.openapi()
    flows = schema["components"]["securitySchemes"]["auth"]["flows"]
    assert flows["clientCredentials"] == {"tokenUrl": "https://auth.example/token", "scopes": {READ: "Read images"}}
    assert schema["paths"]["/a"]["get"]["security"] == [{"auth": [READ]}]
    assert verifier.token_url == "http://127.0.0.1:8700/oauth2/token"


async def test_the_route_body_can_catch_the_principal_s_refusal(issuer: TestIssuer, http: httpx.AsyncClient) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/images/2/or-public", headers=bearer(token))
    assert response.json() == {"id": "2", "public": True, "why": "not the owner of the resource"}
    assert (await http.get("/images/1/or-public", headers=bearer(token))).json() == {"id": "1", "public": False}


async def test_an_auth_error_the_route_raises_itself_answers_403_with_the_handler_only(
    issuer: TestIssuer, http: httpx.AsyncClient, request: pytest.FixtureRequest
) -> None:
    token = issuer.token("usr_alice", [READ])
    response = await http.get("/images/1/then-fails", headers=bearer(token))
    if "handler" in request.node.callspec.params["http"]:
        assert response.status_code == 403
        assert response.headers["www-authenticate"] == (
            'Bearer error="insufficient_scope", error_description="raised by the route itself"'
        )
    else:
        assert response.status_code == 500  # not the principal's: it needs the one line of setup
    assert current_principal() is None  # unbound when the route body fails too


def test_the_principal_s_refusal_is_an_insufficient_scope_error_fastapi_answers() -> None:
    refusal = HTTPInsufficientScopeError("not the owner")
    assert isinstance(refusal, InsufficientScopeError)
    assert isinstance(refusal, HTTPException)
    assert (refusal.status_code, refusal.detail, str(refusal), refusal.reason) == (
        403,
        "not the owner",
        "not the owner",
        "not the owner",
    )
    assert refusal.headers == {
        "WWW-Authenticate": 'Bearer error="insufficient_scope", error_description="not the owner"'
    }


async def test_principals_outside_fastapi_raise_the_plain_error(issuer: TestIssuer) -> None:
    from chit.sdk import TokenVerifier

    verifier = TokenVerifier(issuer.issuer, "image-store", http_client=issuer.http_client(), clock=issuer.clock)
    principal = await verifier.verify(issuer.token("usr_alice", [READ]))
    with pytest.raises(InsufficientScopeError) as refused:
        principal.require(DELETE)
    assert type(refused.value) is InsufficientScopeError


def test_the_dependency_does_not_yield(verifier: Verifier) -> None:
    # a yielding dependency costs FastAPI ~30 µs a request (bench/RESULTS.md, issue 19)
    assert inspect.iscoroutinefunction(type(verifier).__call__)


@pytest.mark.parametrize("setup", ["add_exception_handler", "exception_handlers="])
async def test_an_auth_error_raised_outside_the_dependency_needs_the_handler(
    issuer: TestIssuer, verifier: Verifier, setup: str
) -> None:
    if setup == "exception_handlers=":
        app = FastAPI(exception_handlers=verifier.exception_handlers)
    else:
        app = FastAPI()
        app.add_exception_handler(AuthError, auth_error_handler)

    @app.get("/")
    async def root(request: Request) -> None:
        raise InsufficientScopeError("missing x:y:z")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/")
    assert response.status_code == 403
    assert (
        response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", error_description="missing x:y:z"'
    )
