"""Deferred delegations in the admin API: ``GET /admin/delegations`` and ``DELETE /admin/delegations/{id}``
(DESIGN §4, "Delegation"), over HTTP with real handles made by a registered service's token exchange.

Revoking a delegation ends its handle and every access token redeemed from it; it is audited and
published once however often it is asked; reading takes ``chit:delegations:read``, revoking
``chit:delegations:write``, and a caller who may not read them learns nothing of what exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    Api,
    ChitServer,
    ModuleServers,
    ServiceClient,
    TaggingInstallation,
    add_tagging_user,
    as_user,
    assert_error,
    at_once,
    claims_of,
    delegation_id,
    tagging_installation,
)

from chit.revocation import RevocationKind
from chit.server.administration import Administration, Caller
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.server.credentials import hash_secret
from chit.server.revocations import Revocations
from chit.storage.engine import migrate, sqlite_url
from chit.storage.records import DelegationRecord, RevocationEvent
from chit.testing import Clock

TAGS_WRITE = "tagging:tags:write"
PASSWORD = "delegation-user-password"
ITEM_KEYS = {
    "id",
    "user",
    "user_id",
    "service",
    "scope",
    "job_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "redemptions",
    "state",
}


@pytest.fixture(scope="module")
def installation(module_server: ModuleServers) -> TaggingInstallation:
    installation = tagging_installation(module_server, "delegations-admin")
    for name, permissions in {
        "dlg-reader": ["chit:delegations:read"],
        "dlg-writer": ["chit:delegations:write"],
        "dlg-manager": ["chit:delegations:read", "chit:delegations:write"],
        "user-reader": ["chit:users:read"],
    }.items():
        installation.chit.cli_ok("role", "create", name, *[a for p in permissions for a in ("--permission", p)])
    return installation


@pytest.fixture(scope="module")
def chit(installation: TaggingInstallation) -> ChitServer:
    return installation.chit


@pytest.fixture(scope="module")
def image_store(installation: TaggingInstallation) -> ServiceClient:
    return installation.image_store


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    return as_user(chit, "admin", ADMIN_PASSWORD)


def user(chit: ChitServer, name: str, *roles: str) -> tuple[str, str]:
    """A user who may let image-store act for them later: (their id, a fresh login token)."""
    return add_tagging_user(chit, name, PASSWORD, *roles)


def caller(chit: ChitServer, name: str, role: str) -> Api:
    """An administrator whose token carries only ``role``'s permissions."""
    chit.add_user(name, PASSWORD, "--role", role)
    return as_user(chit, name, PASSWORD)


def refusals(admin: Api, actor: str, operation: str) -> list[dict[str, Any]]:
    return [
        e for e in admin.audit("admin.refused") if e["actors"] == [actor] and e["detail"].get("operation") == operation
    ]


# listing ------------------------------------------------------------------------------------------


def test_a_users_delegations_are_listed_with_their_state_and_never_their_secret(
    chit: ChitServer, admin: Api, image_store: ServiceClient
) -> None:
    alice_id, alice_token = user(chit, "list-alice")
    _, bob_token = user(chit, "list-bob")
    nightly = image_store.deferred_handle(alice_token, job_id="nightly-retag", expires_in="3600")
    weekly = image_store.deferred_handle(alice_token, job_id="weekly")
    bobs = image_store.deferred_handle(bob_token)
    image_store.redeemed_token(nightly)

    response = admin.get("/admin/delegations", params={"user": "list-alice"})
    assert response.status_code == 200, response.text
    listed = {d["id"]: d for d in response.json()["delegations"]}
    assert len(response.json()["delegations"]) == 2
    assert set(listed) == {delegation_id(nightly), delegation_id(weekly)}
    first, second = listed[delegation_id(nightly)], listed[delegation_id(weekly)]
    assert set(first) == ITEM_KEYS
    assert first["user"] == "list-alice"
    assert first["user_id"] == alice_id
    assert first["service"] == "image-store"
    assert first["scope"] == [TAGS_WRITE]
    assert first["job_id"] == "nightly-retag"
    assert first["expires_at"] == first["created_at"] + 3600
    assert (first["revoked_at"], first["state"], first["redemptions"]) == (None, "active", 1)
    assert first["last_used_at"] is not None
    assert (second["job_id"], second["redemptions"], second["last_used_at"]) == ("weekly", 0, None)
    for handle in (nightly, weekly):
        secret = handle.split(".", 1)[1]
        assert secret not in response.text
        assert hash_secret(secret) not in response.text

    everyone = {d["id"] for d in admin.get("/admin/delegations").json()["delegations"]}
    assert {delegation_id(h) for h in (nightly, weekly, bobs)} <= everyone


def test_reading_takes_chit_delegations_read_and_a_refusal_is_audited(chit: ChitServer, admin: Api) -> None:
    narrow = caller(chit, "dlg-narrow", "user-reader")
    user(chit, "dlg-someone")
    for params in ({}, {"user": "dlg-someone"}, {"user": "dlg-nobody-at-all"}):
        # the same refusal whether or not the user exists
        assert_error(narrow.get("/admin/delegations", params=params), 403, "insufficient_scope", "delegations:read")
    refused = refusals(admin, narrow.subject, "delegation.list")
    assert len(refused) == 3
    assert {e["outcome"] for e in refused} == {"failure"}
    assert [e["detail"]["username"] for e in refused] == [None, "dlg-someone", "dlg-nobody-at-all"]

    reader = caller(chit, "dlg-list-reader", "dlg-reader")
    assert reader.get("/admin/delegations").status_code == 200
    assert_error(reader.get("/admin/delegations", params={"user": "dlg-nobody-at-all"}), 404, "not_found", "no user")


def test_unknown_query_parameters_and_malformed_ids_are_400(admin: Api) -> None:
    assert_error(admin.get("/admin/delegations", params={"username": "x"}), 400, "invalid_request", "username")
    assert_error(admin.get("/admin/delegations", params={"user": ""}), 400, "invalid_request", "user")
    assert_error(admin.get("/admin/delegations", params={"user": "x" * 65}), 400, "invalid_request", "user")
    for bad in ("key_abc", "dlg_", "DLG_ABC", "dlg_" + "a" * 61):
        assert_error(admin.delete(f"/admin/delegations/{bad}"), 400, "invalid_request", "delegation_id")


def test_openapi_documents_both_routes_and_their_permissions(chit: ChitServer) -> None:
    paths = httpx.get(chit.url + "/openapi.json", timeout=30).json()["paths"]
    assert "chit:delegations:read" in paths["/admin/delegations"]["get"]["summary"]
    assert "chit:delegations:write" in paths["/admin/delegations/{delegation_id}"]["delete"]["summary"]


# revoking -----------------------------------------------------------------------------------------


def test_revoking_ends_the_handle_and_the_tokens_redeemed_from_it_once(
    chit: ChitServer, admin: Api, image_store: ServiceClient
) -> None:
    carol_id, carol_token = user(chit, "revoke-carol")
    handle = image_store.deferred_handle(carol_token, job_id="thumbnails")
    other = image_store.deferred_handle(carol_token, job_id="kept")
    token = image_store.redeemed_token(handle)
    dlg = delegation_id(handle)
    assert claims_of(token)["sid"] == dlg
    assert image_store.introspect(token)["active"] is True

    assert admin.delete(f"/admin/delegations/{dlg}").json() == {"revoked": True}
    assert admin.delete(f"/admin/delegations/{dlg}").json() == {"revoked": False}

    assert_error(image_store.redeem(handle), 400, "invalid_request")
    assert image_store.introspect(token) == {"active": False}
    image_store.redeemed_token(other)  # the user's other delegation lives on
    listed = {
        d["id"]: d for d in admin.get("/admin/delegations", params={"user": "revoke-carol"}).json()["delegations"]
    }
    assert listed[dlg]["state"] == "revoked"
    assert listed[dlg]["revoked_at"] is not None
    assert listed[delegation_id(other)]["state"] == "active"

    revoked = [e for e in admin.audit("delegation.revoked") if e["detail"].get("delegation") == dlg]
    assert len(revoked) == 1
    [event] = revoked
    assert (event["outcome"], event["subject"], event["actors"]) == ("success", carol_id, [admin.subject])
    assert event["detail"] == {"delegation": dlg, "job_id": "thumbnails"}


def test_concurrent_revocations_record_one_event(chit: ChitServer, admin: Api, image_store: ServiceClient) -> None:
    _, token = user(chit, "race-dan")
    dlg = delegation_id(image_store.deferred_handle(token, job_id="race"))
    answers = at_once(20, lambda _: admin.delete(f"/admin/delegations/{dlg}"))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert sorted(a.json()["revoked"] for a in answers) == [False] * 19 + [True]
    assert len([e for e in admin.audit("delegation.revoked") if e["detail"].get("delegation") == dlg]) == 1


def test_revoking_takes_chit_delegations_write_and_tells_only_a_reader_what_does_not_exist(
    chit: ChitServer, admin: Api, image_store: ServiceClient
) -> None:
    _, token = user(chit, "rights-erin")
    handle = image_store.deferred_handle(token)
    dlg = delegation_id(handle)
    narrow = caller(chit, "dlg-rights-narrow", "user-reader")
    reader = caller(chit, "dlg-rights-reader", "dlg-reader")
    writer = caller(chit, "dlg-rights-writer", "dlg-writer")
    manager = caller(chit, "dlg-rights-manager", "dlg-manager")
    missing = "dlg_" + "a" * 24

    for api in (narrow, reader):
        for target in (dlg, missing):
            assert_error(api.delete(f"/admin/delegations/{target}"), 403, "insufficient_scope", "delegations:write")
    assert image_store.redeem(handle).status_code == 200  # refused: nothing was revoked
    refused = refusals(admin, reader.subject, "delegation.revoke")
    assert [(e["outcome"], e["detail"]["delegation_id"]) for e in refused] == [("failure", dlg), ("failure", missing)]

    # one who may revoke but not read learns nothing of an id that does not exist
    assert_error(writer.delete(f"/admin/delegations/{missing}"), 403, "insufficient_scope", "delegations:read")
    assert_error(writer.get("/admin/delegations"), 403, "insufficient_scope")
    assert_error(manager.delete(f"/admin/delegations/{missing}"), 404, "not_found", missing)
    assert_error(admin.delete(f"/admin/delegations/{missing}"), 404, "not_found", missing)

    assert writer.delete(f"/admin/delegations/{dlg}").json() == {"revoked": True}
    assert_error(image_store.redeem(handle), 400, "invalid_request")


def test_disabling_the_user_ends_their_delegations_for_good(
    chit: ChitServer, admin: Api, image_store: ServiceClient
) -> None:
    _, token = user(chit, "disabled-frank")
    handle = image_store.deferred_handle(token, job_id="after-disable")
    redeemed = image_store.redeemed_token(handle)

    assert admin.post("/admin/users/disabled-frank/disable").status_code == 200
    assert_error(image_store.redeem(handle), 400, "invalid_request")
    assert image_store.introspect(redeemed) == {"active": False}
    [listed] = admin.get("/admin/delegations", params={"user": "disabled-frank"}).json()["delegations"]
    assert (listed["state"], listed["revoked_at"]) == ("revoked", None)

    assert admin.post("/admin/users/disabled-frank/enable").status_code == 200  # enabling revives none of it
    assert_error(image_store.redeem(handle), 400, "invalid_request")
    assert image_store.introspect(redeemed) == {"active": False}
    [listed] = admin.get("/admin/delegations", params={"user": "disabled-frank"}).json()["delegations"]
    assert listed["state"] == "revoked"


# what leaves for the revocation feed --------------------------------------------------------------

NOW = 1_750_000_000
TTL = 600


class Published(NamedTuple):
    kind: RevocationKind
    value: str
    expires: int


class RecordingRevocations(Revocations):
    def __init__(self, server: AuthServer) -> None:
        super().__init__(server)
        self.published: list[Published] = []

    def _published(self, event: RevocationEvent) -> None:
        # what leaves for the services is what the feed holds: the event committed with the revocation
        assert event in self.server.store.revocation_events(event.id - 1, limit=1, now=0)
        self.published.append(Published(event.kind, event.value, event.expires))
        super()._published(event)


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[tuple[AuthServer, RecordingRevocations, Clock]]:
    clock = Clock(NOW)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=sqlite_url(tmp_path), issuer="https://chit.test", access_token_ttl=TTL
    )
    server = AuthServer(settings, clock=clock)
    try:
        migrate(server.store.engine)
        revocations = server.revocations = RecordingRevocations(server)
        yield server, revocations, clock
    finally:
        server.store.engine.dispose()


def stored_delegation(server: AuthServer, delegation: str, expires_at: int) -> str:
    user = server.store.create_user(f"user-{delegation}", "not-a-real-hash", NOW)
    record = DelegationRecord(
        delegation, user.id, "image-store", "hash", frozenset({TAGS_WRITE}), "job-7", None, NOW, expires_at
    )
    server.store.create_delegation(record, max_active=10, now=NOW)
    return user.id


def test_a_revocation_is_published_once_until_the_last_redeemed_token_expires(
    recording: tuple[AuthServer, RecordingRevocations, Clock],
) -> None:
    server, revocations, clock = recording
    long_lived = stored_delegation(server, "dlg_long", NOW + 86_400)
    short_lived = stored_delegation(server, "dlg_short", NOW + 100)
    clock.advance(10)
    admin = Administration(server, Caller.operator())

    assert admin.revoke_delegation("dlg_long") is True
    assert admin.revoke_delegation("dlg_long") is False
    assert revocations.revoke_delegation("dlg_short", subject=short_lived, by=Caller.operator()) is True
    # a redeemed token lives at most one access-token lifetime, and never beyond its delegation
    assert revocations.published == [
        Published("delegation", "dlg_long", NOW + 10 + TTL),
        Published("delegation", "dlg_short", NOW + 100),
    ]
    audited = [r for r in server.store.audit_events(limit=100) if r.type == "delegation.revoked"]
    assert [(r.subject, json.loads(r.detail)) for r in audited] == [
        (long_lived, {"delegation": "dlg_long", "job_id": "job-7"}),
        (short_lived, {"delegation": "dlg_short", "job_id": "job-7"}),
    ]
