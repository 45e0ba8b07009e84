"""RFC 7009 revocation of a deferred-delegation handle (``chit_dd_…``, DESIGN §4 "Delegation") against a
real server: the service it was issued to revokes it whatever ``token_type_hint`` says, which ends the
handle and every access token redeemed from it; a forged, unknown, expired or revoked handle answers
200 (§2.2) and another client's attempt is ``unauthorized_client`` (§2.1), both leaving it alone.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    DEFERRED_DELEGATION_TYPE,
    Api,
    ChitServer,
    ModuleServers,
    ServiceClient,
    TaggingInstallation,
    add_tagging_user,
    as_user,
    at_once,
    claims_of,
    delegation_id,
    tagging_installation,
)

PASSWORD = "rfc7009-user-password"


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers) -> TaggingInstallation:
    return tagging_installation(module_server, "rfc7009-deferred")


@pytest.fixture(scope="module")
def chit(installation: TaggingInstallation) -> ChitServer:
    return installation.chit


@pytest.fixture(scope="module")
def image_store(installation: TaggingInstallation) -> ServiceClient:
    return installation.image_store


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    return as_user(chit, "admin", ADMIN_PASSWORD)


def new_user_token(chit: ChitServer, name: str) -> str:
    return add_tagging_user(chit, name, PASSWORD)[1]


def revoked_events(admin: Api, dlg: str) -> list[dict[str, Any]]:
    return [e for e in admin.audit("delegation.revoked") if dlg in (e["token_id"], e["detail"].get("delegation"))]


def assert_refused_redemption(client: ServiceClient, handle: str) -> None:
    response = client.redeem(handle)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("hint", [None, DEFERRED_DELEGATION_TYPE, "access_token", "refresh_token", "no-such-hint"])
def test_its_own_service_revokes_a_handle_whatever_the_hint(
    chit: ChitServer, image_store: ServiceClient, admin: Api, hint: str | None
) -> None:
    name = f"own-{hint or 'none'}".replace(":", "-")
    handle = image_store.deferred_handle(new_user_token(chit, name), job_id=f"job-{name}")
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


def test_another_client_cannot_revoke_a_handle(chit: ChitServer, installation: TaggingInstallation, admin: Api) -> None:
    # the intruder is another registered service: its own client is authenticated, but the handle is not its own
    image_store, intruder = installation.image_store, installation.tagging
    handle = image_store.deferred_handle(new_user_token(chit, "victim"))
    public = ServiceClient(chit, "chit-cli")
    for client in (intruder, public):
        for hint in ({}, {"token_type_hint": DEFERRED_DELEGATION_TYPE}):
            response = client.revoke(handle, **hint)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "unauthorized_client"
    assert revoked_events(admin, delegation_id(handle)) == []
    token = image_store.redeemed_token(handle)  # still redeemable
    assert image_store.introspect(token)["active"] is True


def test_forged_unknown_and_malformed_handles_answer_200_and_revoke_nothing(
    chit: ChitServer, image_store: ServiceClient, admin: Api
) -> None:
    handle = image_store.deferred_handle(new_user_token(chit, "forged"))
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


def test_an_expired_handle_answers_200_and_is_left_as_it_is(
    chit: ChitServer, image_store: ServiceClient, admin: Api
) -> None:
    handle = image_store.deferred_handle(new_user_token(chit, "expiring"), expires_in="1")
    time.sleep(2.1)
    assert_refused_redemption(image_store, handle)
    assert image_store.revoke(handle).status_code == 200
    dlg = delegation_id(handle)
    assert revoked_events(admin, dlg) == []
    [listed] = admin.get("/admin/delegations", params={"user": "expiring"}).json()["delegations"]
    assert (listed["id"], listed["state"], listed["revoked_at"]) == (dlg, "expired", None)


def test_concurrent_revocations_of_one_handle_record_one_event(
    chit: ChitServer, image_store: ServiceClient, admin: Api
) -> None:
    handle = image_store.deferred_handle(new_user_token(chit, "racing"), job_id="race")
    dlg = delegation_id(handle)

    def revoke(index: int) -> httpx.Response:
        # half at the revocation endpoint, half through the admin API: one revocation between them all
        return admin.delete(f"/admin/delegations/{dlg}") if index % 2 == 0 else image_store.revoke(handle)

    answers = at_once(20, revoke)
    assert sorted(a.status_code for a in answers) == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert len(revoked_events(admin, dlg)) == 1
    assert_refused_redemption(image_store, handle)


def test_redemptions_racing_a_revocation_leave_no_token_alive_and_count_what_was_answered(
    chit: ChitServer, image_store: ServiceClient, admin: Api
) -> None:
    """Twenty redemptions and a revocation at once: whichever redemptions were answered before the revocation
    committed, their tokens die with it (their ``sid`` is the delegation); those after it are refused; the
    count is exactly the tokens answered."""
    handle = image_store.deferred_handle(new_user_token(chit, "racing-redeemer"), job_id="race-redeem")
    dlg = delegation_id(handle)

    def redeem_or_revoke(index: int) -> httpx.Response:
        return image_store.revoke(handle) if index == 10 else image_store.redeem(handle)

    answers = at_once(21, redeem_or_revoke)
    redemptions = answers[:10] + answers[11:]
    assert answers[10].status_code == 200, answers[10].text
    assert {a.status_code for a in redemptions} <= {200, 400}, [a.text for a in redemptions]
    tokens = [a.json()["access_token"] for a in redemptions if a.status_code == 200]
    assert all(a.json()["error"] == "invalid_request" for a in redemptions if a.status_code == 400)
    assert [image_store.introspect(token) for token in tokens] == [{"active": False}] * len(tokens)
    assert_refused_redemption(image_store, handle)
    [listed] = [d for d in admin.get("/admin/delegations").json()["delegations"] if d["id"] == dlg]
    assert (listed["state"], listed["redemptions"]) == ("revoked", len(tokens))
    redeemed = [e for e in admin.audit("delegation.redeemed") if e["token_id"] == dlg]
    assert len(redeemed) == len(tokens)
