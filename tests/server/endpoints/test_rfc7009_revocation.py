"""RFC 7009 token revocation against a real server: refresh tokens take their family and its access
tokens with them, access tokens go inactive at once, unknown tokens answer 200, and a client can
revoke only what was issued to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from helpers import ChitServer, ModuleServers

PASSWORD = "correct horse battery staple"
INACTIVE = {"active": False}


# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {"docs": ["pages:read"]}


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("revocation", services=SERVICES)


class App:
    """A registered client (public when it has no secret), over plain HTTP."""

    def __init__(self, chit: ChitServer, http: httpx.Client, client_id: str, secret: str | None) -> None:
        self.chit, self.http, self.client_id, self.secret = chit, http, client_id, secret

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        if self.secret is None:
            return self.http.post(self.chit.url + path, data={**data, "client_id": self.client_id})
        return self.http.post(self.chit.url + path, data=data, auth=(self.client_id, self.secret))

    def token_response(self, **data: str) -> httpx.Response:
        return self.post("/oauth2/token", data)

    def token(self, **data: str) -> dict[str, Any]:
        response = self.token_response(**data)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def login(self, username: str) -> dict[str, Any]:
        return self.token(grant_type="password", username=username, password=PASSWORD)

    def refresh_response(self, refresh_token: str) -> httpx.Response:
        return self.token_response(grant_type="refresh_token", refresh_token=refresh_token)

    def revoke(self, token: str, **extra: str) -> httpx.Response:
        response = self.post("/oauth2/revoke", {"token": token, **extra})
        assert response.headers["cache-control"] == "no-store"
        return response

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.post("/oauth2/introspect", {"token": token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def module_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def resource(chit: ChitServer, module_http: httpx.Client) -> App:
    """A confidential client that introspects other clients' access tokens."""
    registered = chit.add_client("rv-resource-server")
    return App(chit, module_http, "rv-resource-server", registered["client_secret"])


@pytest.fixture
def apps(chit: ChitServer, http: httpx.Client) -> Any:
    def apps(client_id: str, *args: str) -> App:
        if client_id == "chit-cli":
            return App(chit, http, "chit-cli", None)
        registered = chit.add_client(client_id, *args)
        return App(chit, http, client_id, registered["client_secret"])

    return apps


def login_app(apps: Any, client_id: str) -> App:
    app: App = apps(client_id, "--grant", "password", "--grant", "refresh_token")
    return app


def refused_refresh(app: App, refresh_token: str) -> None:
    response = app.refresh_response(refresh_token)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def test_revoking_a_refresh_token_revokes_its_family_and_access_tokens(
    chit: ChitServer, apps: Any, resource: App
) -> None:
    chit.add_user("rv-family", PASSWORD)
    app = login_app(apps, "rv-family-app")
    login = app.login("rv-family")
    rotated = app.token(grant_type="refresh_token", refresh_token=login["refresh_token"])
    access_tokens = [login["access_token"], rotated["access_token"]]
    assert all(resource.introspect(t)["active"] for t in access_tokens)

    response = app.revoke(rotated["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert response.content in (b"", b"{}")

    for token in access_tokens:
        assert resource.introspect(token) == INACTIVE
    assert app.introspect(rotated["refresh_token"]) == INACTIVE
    refused_refresh(app, rotated["refresh_token"])


def test_revoking_one_family_leaves_the_users_other_sessions(chit: ChitServer, apps: Any, resource: App) -> None:
    chit.add_user("rv-two-sessions", PASSWORD)
    app = login_app(apps, "rv-two-sessions-app")
    laptop = app.login("rv-two-sessions")
    phone = app.login("rv-two-sessions")
    assert app.revoke(laptop["refresh_token"]).status_code == 200
    assert resource.introspect(laptop["access_token"]) == INACTIVE
    assert resource.introspect(phone["access_token"])["active"] is True
    assert app.token(grant_type="refresh_token", refresh_token=phone["refresh_token"])["access_token"]


def test_revoking_an_access_token_is_immediate_and_touches_nothing_else(
    chit: ChitServer, apps: Any, resource: App
) -> None:
    service = apps("rv-service", "--scope", "docs:pages:read")
    revoked = service.token(grant_type="client_credentials")["access_token"]
    kept = service.token(grant_type="client_credentials")["access_token"]
    chit.add_user("rv-access", PASSWORD)
    app = login_app(apps, "rv-access-app")
    login = app.login("rv-access")

    assert service.revoke(revoked, token_type_hint="access_token").status_code == 200
    assert resource.introspect(revoked) == INACTIVE
    assert resource.introspect(kept)["active"] is True

    assert app.revoke(login["access_token"]).status_code == 200
    assert resource.introspect(login["access_token"]) == INACTIVE
    # the refresh token it came with is not revoked by revoking the access token
    assert app.introspect(login["refresh_token"])["active"] is True
    fresh = app.token(grant_type="refresh_token", refresh_token=login["refresh_token"])
    assert resource.introspect(fresh["access_token"])["active"] is True


def test_a_wrong_token_type_hint_still_revokes(chit: ChitServer, apps: Any, resource: App) -> None:
    chit.add_user("rv-hint", PASSWORD)
    app = login_app(apps, "rv-hint-app")
    first = app.login("rv-hint")
    second = app.login("rv-hint")
    assert app.revoke(first["refresh_token"], token_type_hint="access_token").status_code == 200
    assert resource.introspect(first["access_token"]) == INACTIVE
    refused_refresh(app, first["refresh_token"])
    assert app.revoke(second["access_token"], token_type_hint="refresh_token").status_code == 200
    assert resource.introspect(second["access_token"]) == INACTIVE
    assert app.introspect(second["refresh_token"])["active"] is True


def test_revoking_twice_answers_200(apps: Any, resource: App) -> None:
    service = apps("rv-twice", "--scope", "docs:pages:read")
    token = service.token(grant_type="client_credentials")["access_token"]
    assert service.revoke(token).status_code == 200
    assert service.revoke(token).status_code == 200
    assert resource.introspect(token) == INACTIVE


@pytest.mark.parametrize(
    "token",
    [
        "never-issued-refresh-token",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "x" * 3000,
    ],
)
def test_unknown_or_garbage_tokens_answer_200(resource: App, token: str) -> None:
    response = resource.revoke(token)
    assert response.status_code == 200
    response = resource.revoke(token, token_type_hint="refresh_token")
    assert response.status_code == 200


def test_another_clients_tokens_are_refused_and_stay_active(chit: ChitServer, apps: Any, resource: App) -> None:
    chit.add_user("rv-victim", PASSWORD)
    owner = login_app(apps, "rv-owner-app")
    intruder = apps("rv-intruder-app", "--scope", "docs:pages:read")
    login = owner.login("rv-victim")

    for token in (login["access_token"], login["refresh_token"]):
        response = intruder.revoke(token)
        assert response.status_code == 400
        assert response.json()["error"] == "unauthorized_client"
        response = apps("chit-cli").revoke(token)
        assert response.status_code == 400
        assert response.json()["error"] == "unauthorized_client"

    assert resource.introspect(login["access_token"])["active"] is True
    assert owner.introspect(login["refresh_token"])["active"] is True
    assert owner.token(grant_type="refresh_token", refresh_token=login["refresh_token"])["access_token"]


def test_revocation_requires_client_authentication(
    chit: ChitServer, apps: Any, http: httpx.Client, resource: App
) -> None:
    service = apps("rv-needs-auth", "--scope", "docs:pages:read")
    token = service.token(grant_type="client_credentials")["access_token"]
    url = chit.url + "/oauth2/revoke"
    attempts = {
        "none": http.post(url, data={"token": token}),
        "wrong secret": http.post(url, data={"token": token}, auth=("rv-needs-auth", "wrong")),
        "unknown client": http.post(url, data={"token": token}, auth=("rv-no-such-client", "wrong")),
        "confidential client without secret": http.post(url, data={"token": token, "client_id": "rv-needs-auth"}),
    }
    for what, response in attempts.items():
        assert response.status_code == 401, what
        assert response.json()["error"] == "invalid_client", what
    assert resource.introspect(token)["active"] is True


def test_public_client_revokes_its_own_refresh_token_with_client_id_only(chit: ChitServer) -> None:
    chit.add_user("rv-public", PASSWORD)
    with OAuth2Client(
        "chit-cli", token_endpoint_auth_method="none", revocation_endpoint_auth_method="none", timeout=30
    ) as client:
        token = client.fetch_token(chit.token_url, username="rv-public", password=PASSWORD)
        response = client.revoke_token(
            chit.url + "/oauth2/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
        )
        assert response.status_code == 200
        assert b"client_id=chit-cli" in response.request.content
        assert "authorization" not in response.request.headers
        assert b"client_secret" not in response.request.content

        with pytest.raises(OAuthError) as refused:
            client.refresh_token(chit.token_url, refresh_token=token["refresh_token"])
        assert refused.value.error == "invalid_grant"


def test_confidential_client_revokes_through_authlib(chit: ChitServer, resource: App) -> None:
    registered = chit.add_client("rv-authlib", "--scope", "docs:pages:read")
    with OAuth2Client(
        "rv-authlib",
        registered["client_secret"],
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
        timeout=30,
    ) as client:
        token = client.fetch_token(chit.token_url, grant_type="client_credentials")
        assert resource.introspect(token["access_token"])["active"] is True
        response = client.revoke_token(
            chit.url + "/oauth2/revoke", token=token["access_token"], token_type_hint="access_token"
        )
        assert response.status_code == 200
        assert response.request.headers["authorization"].startswith("Basic ")
    assert resource.introspect(token["access_token"]) == INACTIVE


def test_missing_token_parameter_is_invalid_request(resource: App) -> None:
    response = resource.post("/oauth2/revoke", {"token_type_hint": "access_token"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
