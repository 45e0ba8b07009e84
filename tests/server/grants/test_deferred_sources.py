"""What a deferred delegation may be made from (DESIGN §4, "Delegation"), against a real ``chit serve``.

A handle lives on its own for up to days, whatever becomes of the token it was made from, so it is
made from a user's own token only: a token redeemed from another handle (``sid`` ``dlg_…``) or one the
gateway exchanged from an API key (``sid`` ``key_…``) is refused with 400 ``invalid_request``, else a
handle would outlive the delegation's or the key's expiry and revocation. A login token still works.

The image store may tag for a user later; the tagging service may tag for a user later as well.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import (
    IMAGE_STORE_MANIFEST,
    TOKEN_EXCHANGE,
    ModuleServers,
    ServiceClient,
    access_token,
    audit_events,
    claims_of,
    delegation_id,
    register_service,
    user_token,
)

PASSWORD = "deferred-sources-password"
API_KEY_TYPE = "urn:chit:token-type:api-key"
TAGGING = """\
id = "tagging"
[permissions]
"tags:write" = "Write tags"
[roles]
editor = ["tags:write"]
[on_behalf]
permissions = ["tagging:tags:write"]
deferred = ["tagging:tags:write"]
"""


class Installation:
    def __init__(self, module_server: ModuleServers) -> None:
        self.chit = module_server("deferred-sources")
        directory = self.chit.data_dir.parent
        self.image_store = register_service(self.chit, directory, "image-store", IMAGE_STORE_MANIFEST)
        self.tagging = register_service(self.chit, directory, "tagging", TAGGING)
        gateway = self.chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)
        self.gateway = ServiceClient(self.chit, "gateway", gateway["client_secret"])
        self.chit.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
        self.chit.cli_ok("grant", "client:gateway", "edge")
        self.users = 0

    def new_user(self) -> str:
        self.users += 1
        name = f"sources-user-{self.users}"
        self.chit.add_user(name, PASSWORD, "--role", "tagging:editor", "--role", "image-store:viewer")
        return name

    def login_token(self, username: str) -> str:
        return user_token(self.chit, username, PASSWORD)

    def created_jobs(self) -> set[Any]:
        return {event["detail"]["job_id"] for event in audit_events(self.chit, "delegation.created")}


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers) -> Installation:
    return Installation(module_server)


def assert_refused_as_a_source(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request", body
    assert "a user's own token" in body["error_description"], body
    assert "access_token" not in body
    assert response.headers["cache-control"] == "no-store"


def test_a_users_login_token_still_makes_a_deferred_delegation(installation: Installation) -> None:
    user = installation.login_token(installation.new_user())
    assert claims_of(user)["sid"].startswith("rtf_")
    handle = installation.tagging.deferred_handle(user, job_id="from-login")
    redeemed = claims_of(installation.tagging.redeemed_token(handle))
    assert redeemed["sub"] == claims_of(user)["sub"]
    assert redeemed["scope"] == "tagging:tags:write"
    assert "from-login" in installation.created_jobs()


def test_a_token_redeemed_from_a_deferred_delegation_makes_none(installation: Installation) -> None:
    user = installation.login_token(installation.new_user())
    handle = installation.image_store.deferred_handle(user, expires_in="60", job_id="short-lived")
    redeemed = installation.image_store.redeemed_token(handle)
    claims = claims_of(redeemed)
    assert claims["sid"] == delegation_id(handle)
    assert "tagging" in claims["aud"]  # addressed to the tagging service, which may defer tags:write
    # a 60-second delegation must not be stretched into a week-long one
    response = installation.tagging.defer(redeemed, expires_in=str(7 * 86_400), job_id="laundered-handle")
    assert_refused_as_a_source(response)
    assert "laundered-handle" not in installation.created_jobs()


def test_a_token_exchanged_from_an_api_key_makes_none(installation: Installation) -> None:
    username = installation.new_user()
    key = installation.chit.cli_ok(
        "api-key", "create", "--owner", f"user:{username}", "--scope", "tagging:tags:write", "--json"
    ).json()
    exchanged = access_token(installation.gateway.exchange(key["api_key"], subject_token_type=API_KEY_TYPE))
    claims = claims_of(exchanged)
    assert claims["sid"] == key["id"]
    assert "tagging" in claims["aud"]
    response = installation.tagging.defer(exchanged, expires_in=str(7 * 86_400), job_id="laundered-key")
    assert_refused_as_a_source(response)
    assert "laundered-key" not in installation.created_jobs()
    # the key's owner, logged in, still may
    handle = installation.tagging.deferred_handle(installation.login_token(username), job_id="owner-login")
    assert handle.startswith("chit_dd_dlg_")
