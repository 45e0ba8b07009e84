"""RFC 7009 revocation of a deferred-delegation handle (``chit_dd_…``, DESIGN §4 "Delegation") against a
real server: the service it was issued to revokes it whatever ``token_type_hint`` says, which ends the
handle and every access token redeemed from it; a forged, unknown, expired or revoked handle answers
200 (§2.2) and another client's attempt is ``unauthorized_client`` (§2.1), both leaving it alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers import ADMIN_PASSWORD, Api, ChitServer, ModuleServers, as_user, claims_of

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED = "urn:chit:token-type:deferred-delegation"
PASSWORD = "rfc7009-user-password"
TAGGING = """\
id = "tagging"

[permissions]
"tags:write" = "Add or remove tags"

[roles]
editor = ["tags:write"]
"""
IMAGE_STORE = """\
id = "image-store"

[permissions]
"images:read" = "Read"

[roles]
viewer = ["images:read"]

[on_behalf]
permissions = ["tagging:tags:write"]
deferred = ["tagging:tags:write"]
"""


class Client:
    """A client at the token, introspection and revocation endpoints (public when it has no secret)."""

    def __init__(self, chit: ChitServer, client_id: str, secret: str | None) -> None:
        self.chit, self.client_id, self.secret = chit, client_id, secret

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        if self.secret is None:
            return httpx.post(self.chit.url + path, data={**data, "client_id": self.client_id}, timeout=30)
        return httpx.post(self.chit.url + path, data=data, auth=(self.client_id, self.secret), timeout=30)

    def defer(self, user_token: str, **extra: str) -> str:
        response = self.post(
            "/oauth2/token",
            {
                "grant_type": EXCHANGE,
                "subject_token": user_token,
                "subject_token_type": ACCESS_TOKEN,
                "requested_token_type": DEFERRED,
                **extra,
            },
        )
        assert response.status_code == 200, response.text
        handle: str = response.json()["access_token"]
        assert handle.startswith("chit_dd_dlg_")
        return handle

    def redeem(self, handle: str) -> httpx.Response:
        data = {"grant_type": EXCHANGE, "subject_token": handle, "subject_token_type": DEFERRED}
        return self.post("/oauth2/token", data)

    def redeemed_token(self, handle: str) -> str:
        response = self.redeem(handle)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def introspect(self, token: str) -> dict[str, Any]:
        response = self.post("/oauth2/introspect", {"token": token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def revoke(self, token: str, **extra: str) -> httpx.Response:
        response = self.post("/oauth2/revoke", {"token": token, **extra})
        assert response.headers["cache-control"] == "no-store"
        return response


class Installation(NamedTuple):
    chit: ChitServer
    image_store: Client
    intruder: Client
    admin: Api


def register(chit: ChitServer, directory: Path, name: str, manifest: str) -> dict[str, Any]:
    path = directory / f"{name}.toml"
    path.write_text(manifest, encoding="utf-8")
    data: dict[str, Any] = chit.cli_ok("service", "register", str(path), "--json").json()
    return data


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Installation:
    chit = module_server("rfc7009-deferred")
    directory = tmp_path_factory.mktemp("rfc7009-deferred-manifests")
    tagging_secret = register(chit, directory, "tagging", TAGGING)["client_secret"]
    secret = register(chit, directory, "image-store", IMAGE_STORE)["client_secret"]
    image_store = Client(chit, "image-store", secret)
    # another registered service: its own client is authenticated, but the handles are not its own
    intruder = Client(chit, "tagging", tagging_secret)
    return Installation(chit, image_store, intruder, as_user(chit, "admin", ADMIN_PASSWORD))


@pytest.fixture(scope="module")
def chit(installation: Installation) -> ChitServer:
    return installation.chit


@pytest.fixture(scope="module")
def image_store(installation: Installation) -> Client:
    return installation.image_store


@pytest.fixture(scope="module")
def admin(installation: Installation) -> Api:
    return installation.admin


def user_token(chit: ChitServer, name: str) -> str:
    chit.add_user(name, PASSWORD, "--role", "tagging:editor", "--role", "image-store:viewer")
    api = as_user(chit, name, PASSWORD)
    assert api.token is not None
    return api.token


def delegation_id(handle: str) -> str:
    return handle.removeprefix("chit_dd_").split(".", 1)[0]


def revoked_events(admin: Api, dlg: str) -> list[dict[str, Any]]:
    response = admin.get("/admin/audit", params={"type": "delegation.revoked", "limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return [e for e in events if dlg in (e["token_id"], e["detail"].get("delegation"))]


def assert_refused_redemption(client: Client, handle: str) -> None:
    response = client.redeem(handle)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("hint", [None, DEFERRED, "access_token", "refresh_token", "no-such-hint"])
def test_its_own_service_revokes_a_handle_whatever_the_hint(
    chit: ChitServer, image_store: Client, admin: Api, hint: str | None
) -> None:
    name = f"own-{hint or 'none'}".replace(":", "-")
    handle = image_store.defer(user_token(chit, name), job_id=f"job-{name}")
    token = image_store.redeemed_token(handle)
    dlg = delegation_id(handle)
    assert claims_of(token)["sid"] == dlg
    assert image_store.introspect(token)["active"] is True

    response = image_store.revoke(handle, **({} if hint is None else {"token_type_hint": hint}))
    assert response.status_code == 200, response.text
    assert response.content in (b"", b"{}")

    assert_refused_redemption(image_store, handle)
    assert image_store.introspect(token) == {"active": False}
    [event] = revoked_events(admin, dlg)
    assert (event["outcome"], event["client_id"], event["token_id"], event["actors"]) == (
        "success",
        "image-store",
        dlg,
        [],
    )
    assert event["detail"] == {"job_id": f"job-{name}", "via": "revocation endpoint"}

    assert image_store.revoke(handle).status_code == 200  # revoked already: 200, nothing recorded
    assert len(revoked_events(admin, dlg)) == 1


def test_another_client_cannot_revoke_a_handle(chit: ChitServer, installation: Installation, admin: Api) -> None:
    image_store, intruder = installation.image_store, installation.intruder
    handle = image_store.defer(user_token(chit, "victim"))
    public = Client(chit, "chit-cli", None)
    for client in (intruder, public):
        for hint in ({}, {"token_type_hint": DEFERRED}):
            response = client.revoke(handle, **hint)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "unauthorized_client"
    assert revoked_events(admin, delegation_id(handle)) == []
    token = image_store.redeemed_token(handle)  # still redeemable
    assert image_store.introspect(token)["active"] is True


def test_forged_unknown_and_malformed_handles_answer_200_and_revoke_nothing(
    chit: ChitServer, image_store: Client, admin: Api
) -> None:
    handle = image_store.defer(user_token(chit, "forged"))
    dlg = delegation_id(handle)
    for token in (
        f"chit_dd_{dlg}.not-the-secret",
        f"chit_dd_{dlg}.",
        f"chit_dd_{dlg}",
        "chit_dd_dlg_" + "a" * 24 + "." + handle.split(".", 1)[1],
        "chit_dd_",
        "chit_dd_." + "x" * 40,
        "chit_dd_" + "d" * 41 + ".secret",
    ):
        assert image_store.revoke(token).status_code == 200, token
    assert revoked_events(admin, dlg) == []
    image_store.redeemed_token(handle)


def test_an_expired_handle_answers_200_and_is_left_as_it_is(chit: ChitServer, image_store: Client, admin: Api) -> None:
    handle = image_store.defer(user_token(chit, "expiring"), expires_in="1")
    time.sleep(2.1)
    assert_refused_redemption(image_store, handle)
    assert image_store.revoke(handle).status_code == 200
    dlg = delegation_id(handle)
    assert revoked_events(admin, dlg) == []
    [listed] = admin.get("/admin/delegations", params={"user": "expiring"}).json()["delegations"]
    assert (listed["id"], listed["state"], listed["revoked_at"]) == (dlg, "expired", None)


def test_concurrent_revocations_of_one_handle_record_one_event(
    chit: ChitServer, image_store: Client, admin: Api
) -> None:
    handle = image_store.defer(user_token(chit, "racing"), job_id="race")
    dlg = delegation_id(handle)
    barrier = threading.Barrier(20)
    answers: list[httpx.Response] = []

    def revoke(by_admin: bool) -> None:
        barrier.wait()
        answers.append(admin.delete(f"/admin/delegations/{dlg}") if by_admin else image_store.revoke(handle))

    # half at the revocation endpoint, half through the admin API: one revocation between them all
    threads = [threading.Thread(target=revoke, args=(i % 2 == 0,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert len(revoked_events(admin, dlg)) == 1
    assert_refused_redemption(image_store, handle)
