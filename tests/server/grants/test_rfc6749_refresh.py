"""RFC 6749 §6 refresh token grant: rotation, reuse detection (RFC 9700 §4.14.2), scope rules
(DESIGN §4), lifetimes, and refusals that consume nothing. Against a real server over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from helpers import ChitServer, ModuleServers, ServerOptions

PASSWORD = "correct horse battery staple"


SHORT_LIVED = {
    "idle": {"CHIT_REFRESH_IDLE_TTL": "3"},
    "absolute": {"CHIT_REFRESH_ABSOLUTE_TTL": "3"},
}
# The services whose permissions these tests grant: a permission no registered service defines
# cannot be granted (DESIGN §4, service manifest).
SERVICES = {
    "keep": ["a:read", "b:read"],
    "narrow": ["a:read", "b:read", "c:read"],
    "held": ["a:read", "b:read"],
    "consume": ["a:read", "a:write"],
    "grow": ["a:read", "b:read"],
    "shrink": ["a:read", "b:read"],
}


@pytest.fixture(scope="module")
def servers(module_server: ModuleServers) -> dict[str, ChitServer]:
    """The shared server and two with short refresh lifetimes, started side by side."""
    short_lived: dict[str, ServerOptions] = {name: {"env": env} for name, env in SHORT_LIVED.items()}
    return module_server.together("refresh", {"main": {"services": SERVICES}, **short_lived})


@pytest.fixture(scope="module")
def chit(servers: dict[str, ChitServer]) -> ChitServer:
    return servers["main"]


class App:
    """A registered client, talking to the token, introspection and revocation endpoints over HTTP."""

    def __init__(self, chit: ChitServer, http: httpx.Client, client_id: str, secret: str | None) -> None:
        self.chit, self.http, self.client_id, self.secret = chit, http, client_id, secret

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        if self.secret is None:
            return self.http.post(self.chit.url + path, data={**data, "client_id": self.client_id})
        return self.http.post(self.chit.url + path, data=data, auth=(self.client_id, self.secret))

    def login(self, username: str, **extra: str) -> dict[str, Any]:
        response = self.post(
            "/oauth2/token", {"grant_type": "password", "username": username, "password": PASSWORD, **extra}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refresh_response(self, refresh_token: str, **extra: str) -> httpx.Response:
        response = self.post("/oauth2/token", {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})
        assert response.headers["cache-control"] == "no-store"
        return response

    def refresh(self, refresh_token: str, **extra: str) -> dict[str, Any]:
        response = self.refresh_response(refresh_token, **extra)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
        return body

    def refused(self, refresh_token: str, error: str, **extra: str) -> None:
        response = self.refresh_response(refresh_token, **extra)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == error

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.post("/oauth2/introspect", {"token": token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def apps(chit: ChitServer, http: httpx.Client) -> Any:
    def apps(client_id: str, *args: str) -> App:
        if client_id == "chit-cli":
            return App(chit, http, "chit-cli", None)
        if not args:
            args = ("--grant", "password", "--grant", "refresh_token")
        registered = chit.add_client(client_id, *args)
        return App(chit, http, client_id, registered["client_secret"])

    return apps


def test_every_refresh_rotates_and_the_old_token_is_refused(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-rotate", PASSWORD)
    app = apps("chit-cli")
    first = app.login("rt-rotate")["refresh_token"]
    second = app.refresh(first)["refresh_token"]
    third = app.refresh(second)["refresh_token"]
    assert len({first, second, third}) == 3
    app.refused(second, "invalid_grant")


def test_authlib_refresh_token_rotates(chit: ChitServer) -> None:
    chit.add_user("rt-authlib", PASSWORD)
    with OAuth2Client("chit-cli", token_endpoint_auth_method="none", timeout=30) as client:
        token = client.fetch_token(chit.token_url, username="rt-authlib", password=PASSWORD)
        old = token["refresh_token"]
        refreshed = client.refresh_token(chit.token_url, refresh_token=old)
        assert refreshed["refresh_token"] != old
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed["token_type"] == "Bearer"
        assert client.token["refresh_token"] == refreshed["refresh_token"]
        again = client.refresh_token(chit.token_url)  # Authlib uses the refresh token it holds
        assert again["refresh_token"] != refreshed["refresh_token"]


def test_reuse_revokes_the_whole_family_and_its_access_tokens(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-reuse", PASSWORD)
    app = apps("rt-reuse-app")
    login = app.login("rt-reuse")
    second = app.refresh(login["refresh_token"])
    third = app.refresh(second["refresh_token"])
    access_tokens = [login["access_token"], second["access_token"], third["access_token"]]
    assert all(app.introspect(t)["active"] for t in access_tokens)
    assert app.introspect(third["refresh_token"])["active"] is True

    app.refused(login["refresh_token"], "invalid_grant")  # a stolen, already used token comes back

    app.refused(third["refresh_token"], "invalid_grant")  # the newest token of the family is dead too
    assert app.introspect(third["refresh_token"]) == {"active": False}
    for token in access_tokens:
        assert app.introspect(token) == {"active": False}


def test_reuse_does_not_touch_other_families_of_the_same_user(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-two-sessions", PASSWORD)
    app = apps("rt-two-sessions-app")
    laptop = app.login("rt-two-sessions")
    phone = app.login("rt-two-sessions")
    app.refresh(laptop["refresh_token"])
    app.refused(laptop["refresh_token"], "invalid_grant")
    assert app.introspect(phone["access_token"])["active"] is True
    assert app.refresh(phone["refresh_token"])["access_token"]


def test_refresh_keeps_the_original_scope(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-keep", "--permission", "keep:a:read", "--permission", "keep:b:read")
    chit.add_user("rt-keep-user", PASSWORD, "--role", "rt-keep")
    app = apps("chit-cli")
    login = app.login("rt-keep-user", scope="keep:a:read")
    assert login["scope"] == "keep:a:read"
    assert app.refresh(login["refresh_token"])["scope"] == "keep:a:read"


def test_refresh_can_narrow_and_cannot_widen(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-narrow", "--permission", "narrow:a:read", "--permission", "narrow:b:read")
    chit.add_user("rt-narrow-user", PASSWORD, "--role", "rt-narrow")
    app = apps("chit-cli")
    login = app.login("rt-narrow-user", scope="narrow:a:read narrow:b:read")

    narrowed = app.refresh(login["refresh_token"], scope="narrow:b:read")
    assert narrowed["scope"] == "narrow:b:read"
    # omitting scope on the next refresh means the scope originally granted (RFC 6749 §6)
    restored = app.refresh(narrowed["refresh_token"])
    assert restored["scope"] == "narrow:a:read narrow:b:read"

    app.refused(restored["refresh_token"], "invalid_scope", scope="narrow:c:read")
    app.refused(restored["refresh_token"], "invalid_scope", scope="narrow:*:read")


def test_refresh_cannot_reach_what_the_login_narrowed_away(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-held", "--permission", "held:a:read", "--permission", "held:b:read")
    chit.add_user("rt-held-user", PASSWORD, "--role", "rt-held")
    app = apps("chit-cli")
    login = app.login("rt-held-user", scope="held:a:read")
    # the user holds held:b:read, but the family was granted held:a:read only
    app.refused(login["refresh_token"], "invalid_scope", scope="held:b:read")
    assert app.refresh(login["refresh_token"])["scope"] == "held:a:read"


def test_refused_refresh_consumes_nothing(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-consume", "--permission", "consume:a:read")
    chit.add_user("rt-consume-user", PASSWORD, "--role", "rt-consume")
    app = apps("rt-consume-app")
    login = app.login("rt-consume-user")
    token = login["refresh_token"]
    app.refused(token, "invalid_scope", scope="consume:a:write")
    app.refused(token, "invalid_scope", scope="not-a-permission")
    assert app.introspect(token)["active"] is True
    assert app.introspect(login["access_token"])["active"] is True
    assert app.refresh(token)["scope"] == "consume:a:read"


def test_new_grant_widens_a_new_login_but_not_a_refresh(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-first", "--permission", "grow:a:read")
    chit.cli_ok("role", "create", "rt-second", "--permission", "grow:b:read")
    chit.add_user("rt-grow", PASSWORD, "--role", "rt-first")
    app = apps("chit-cli")
    login = app.login("rt-grow")
    assert login["scope"] == "grow:a:read"

    chit.cli_ok("grant", "user:rt-grow", "rt-second")
    refreshed = app.refresh(login["refresh_token"])
    assert refreshed["scope"] == "grow:a:read"
    app.refused(refreshed["refresh_token"], "invalid_scope", scope="grow:b:read")
    # that refusal consumed nothing
    assert app.refresh(refreshed["refresh_token"])["scope"] == "grow:a:read"

    assert app.login("rt-grow")["scope"] == "grow:a:read grow:b:read"


def test_revoked_grant_narrows_the_next_refresh(chit: ChitServer, apps: Any) -> None:
    chit.cli_ok("role", "create", "rt-shrink-a", "--permission", "shrink:a:read")
    chit.cli_ok("role", "create", "rt-shrink-b", "--permission", "shrink:b:read")
    chit.add_user("rt-shrink", PASSWORD, "--role", "rt-shrink-a", "--role", "rt-shrink-b")
    app = apps("chit-cli")
    login = app.login("rt-shrink")
    assert login["scope"] == "shrink:a:read shrink:b:read"

    chit.cli_ok("revoke-grant", "user:rt-shrink", "rt-shrink-b")
    refreshed = app.refresh(login["refresh_token"])
    assert refreshed["scope"] == "shrink:a:read"
    app.refused(refreshed["refresh_token"], "invalid_scope", scope="shrink:b:read")
    assert app.refresh(refreshed["refresh_token"], scope="shrink:a:read")["scope"] == "shrink:a:read"
    assert app.login("rt-shrink")["scope"] == "shrink:a:read"


def test_refresh_by_another_client_is_invalid_grant(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-other-client", PASSWORD)
    owner = apps("rt-owner-app")
    thief = apps("rt-thief-app")
    login = owner.login("rt-other-client")
    thief.refused(login["refresh_token"], "invalid_grant")
    apps("chit-cli").refused(login["refresh_token"], "invalid_grant")
    # the attempt neither consumed the token nor revoked its family
    assert owner.introspect(login["access_token"])["active"] is True
    assert owner.refresh(login["refresh_token"])["access_token"]


def test_client_without_refresh_grant_cannot_refresh(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-no-grant", PASSWORD)
    login = apps("chit-cli").login("rt-no-grant")
    other = apps("rt-password-only-app", "--grant", "password")
    other.refused(login["refresh_token"], "unauthorized_client")


def test_unknown_refresh_token_is_invalid_grant(apps: Any) -> None:
    app = apps("chit-cli")
    app.refused("this-token-was-never-issued", "invalid_grant")


def test_missing_refresh_token_is_invalid_request(apps: Any) -> None:
    response = apps("chit-cli").post("/oauth2/token", {"grant_type": "refresh_token"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_disabled_user_cannot_refresh(chit: ChitServer, apps: Any) -> None:
    chit.add_user("rt-disabled", PASSWORD)
    app = apps("chit-cli")
    login = app.login("rt-disabled")
    chit.cli_ok("user", "disable", "rt-disabled")
    app.refused(login["refresh_token"], "invalid_grant")


def test_idle_lifetime_expires_an_unused_refresh_token(servers: dict[str, ChitServer], http: httpx.Client) -> None:
    server = servers["idle"]
    server.add_user("rt-idle", PASSWORD)
    app = App(server, http, "chit-cli", None)
    login = app.login("rt-idle")
    kept = app.refresh(login["refresh_token"])["refresh_token"]  # used within its idle time: fine
    time.sleep(3.2)  # CHIT_REFRESH_IDLE_TTL=3 passes without use; the absolute lifetime is 30 days
    app.refused(kept, "invalid_grant")


def test_absolute_lifetime_ends_the_family_despite_use(servers: dict[str, ChitServer], http: httpx.Client) -> None:
    server = servers["absolute"]
    server.add_user("rt-absolute", PASSWORD)
    app = App(server, http, "chit-cli", None)
    login = app.login("rt-absolute")
    # the rotated token is fresh, with 14 days of idle time; only the family's 3 seconds can end it
    token = app.refresh(login["refresh_token"])["refresh_token"]
    time.sleep(3.2)
    app.refused(token, "invalid_grant")
