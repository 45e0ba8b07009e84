"""The photo example end to end over HTTP: a real ``chit serve``, the image store and the tagging service
as uvicorn processes configured through their environment, the archiver run as a job (DESIGN §4,
"Delegation: token exchange (RFC 8693) with actor chains").

The chain of the example: alice → image store → tagging → image store. The image store exchanges
alice's token for one to the tagging service; tagging reads the image with its own account and exchanges
that token again to write the tags back, so the image store sees tagging as the current actor and
itself below it. Tests that need a token of the chain in hand build it with the services' credentials,
exactly as the services' ``ServiceIdentity.for_user`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers import (
    ROOT,
    ChitServer,
    ModuleServers,
    ServiceClient,
    ServiceProcess,
    access_token,
    audit_events,
    claims_of,
    free_port,
    register_manifest_file,
    user_token,
)

from chit import Actor, OAuth2Error, ServiceIdentity, Verifier

PHOTOS = ROOT / "examples" / "photos"
PASSWORD = "photo-password-1"
TAG_FOR_USER = ["tagging:tags:write", "image-store:images:write"]  # what the image store defers for a tagging job


@dataclass
class Photos:
    """The auth server, the services' credentials, the users' ids and the running services."""

    chit: ChitServer
    secrets: dict[str, str]
    users: dict[str, str]
    image_store: ServiceProcess
    tagging: ServiceProcess

    def token(self, username: str) -> str:
        return user_token(self.chit, username, PASSWORD)

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def identity(self, service: str) -> ServiceIdentity:
        return ServiceIdentity(service, self.secrets[service], issuer=self.chit.url)

    def client(self, service: str) -> ServiceClient:
        """``service``'s own client, sending requests as they go on the wire."""
        return ServiceClient(self.chit, service, self.secrets[service])

    def own_token(self, service: str) -> str:
        return self.client(service).own_token()

    def exchange(self, service: str, subject_token: str | None = None, **params: str) -> httpx.Response:
        """A token-exchange request by ``service``'s own client, as sent on the wire."""
        return self.client(service).exchange(subject_token, **params)

    def redeem(self, handle: str, **params: str) -> httpx.Response:
        """The image store's job redeeming a deferred delegation."""
        return self.client("image-store").redeem(handle, **params)

    def chain(self, username: str) -> tuple[str, str]:
        """The tokens of the chain for ``username``: the image store's for tagging, and tagging's, exchanged
        from it, for the image store."""
        to_tagging = access_token(self.exchange("image-store", self.token(username), audience="tagging"))
        back = access_token(self.exchange("tagging", to_tagging, audience="image-store"))
        return to_tagging, back

    def upload(self, username: str, image_id: str, title: str, *, tag: bool = False) -> dict[str, Any]:
        """An image uploaded by ``username``; untagged unless ``tag``, so that a test tags it as it means to."""
        response = httpx.put(
            f"{self.image_store.url}/images/{image_id}",
            params={"title": title, "tag": tag},
            headers=self.headers(username),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        image: dict[str, Any] = response.json()
        return image

    def image(self, image_id: str, username: str = "alice") -> dict[str, Any]:
        response = httpx.get(f"{self.image_store.url}/images/{image_id}", headers=self.headers(username))
        assert response.status_code == 200, response.text
        image: dict[str, Any] = response.json()
        return image

    def audit(self, event_type: str) -> list[dict[str, Any]]:
        return audit_events(self.chit, event_type)


@pytest.fixture(scope="module")
def photos(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Photos]:
    chit = module_server("photo-delegation")
    secrets = {
        name: register_manifest_file(chit, PHOTOS / f"{name}.toml") for name in ("image-store", "tagging", "archiver")
    }
    roles = ("--role", "image-store:owner", "--role", "tagging:editor")
    users = {name: chit.add_user(name, PASSWORD, *roles)["id"] for name in ("alice", "bob", "erin")}
    users["frank"] = chit.add_user("frank", PASSWORD, "--role", "image-store:owner")["id"]  # tagging not for him
    logs = tmp_path_factory.mktemp("photo-services")
    image_store = ServiceProcess("image_store", PHOTOS, free_port(), logs / "image_store.log")
    tagging = ServiceProcess("tagging", PHOTOS, free_port(), logs / "tagging.log")
    image_store.env = {
        "CHIT_ISSUER": chit.url,
        "IMAGE_STORE_CLIENT_SECRET": secrets["image-store"],
        "TAGGING_URL": tagging.url,
        "IMAGE_STORE_JOBS_EVERY": "0.2",  # the job queue runs often enough for a test to wait on it
    }
    tagging.env = {
        "CHIT_ISSUER": chit.url,
        "TAGGING_CLIENT_SECRET": secrets["tagging"],
        "IMAGE_STORE_URL": image_store.url,
    }
    try:
        image_store.start()
        tagging.start()
        yield Photos(chit, secrets, users, image_store, tagging)
    finally:
        image_store.stop()
        tagging.stop()


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


def account_of(photos: Photos, service: str) -> str:
    """The subject id of a service's own account: what ``act.sub`` names."""
    sub: str = claims_of(photos.own_token(service))["sub"]
    return sub


# --- now, for a user ----------------------------------------------------------------------------------


def test_an_upload_comes_back_tagged_with_its_location_for_the_uploader(photos: Photos) -> None:
    uploaded = photos.upload("alice", "porto", "Sunrise over the River in Porto", tag=True)
    assert uploaded["tags"] == ["over", "river", "sunrise", "the"]
    assert uploaded["location"] == "Porto"
    assert uploaded["tagged_by"] == ["tagging", "image-store"]  # tagging acting for alice, through the store
    assert photos.image("porto") == uploaded
    exchanges = [e for e in photos.audit("token.issued") if e["subject"] == photos.users["alice"] and e["actors"]]
    assert ("tagging", ["tagging", "image-store"]) in [(e["client_id"], e["actors"]) for e in exchanges]


def test_an_upload_by_a_user_who_does_not_let_tagging_write_stays_untagged(photos: Photos) -> None:
    uploaded = photos.upload("frank", "franks", "Lunch in Rome", tag=True)
    assert (uploaded["tags"], uploaded["location"], uploaded["tagged_by"]) == ([], None, [])


def test_tagging_acting_for_alice_cannot_write_tags_or_location_on_bobs_upload(photos: Photos) -> None:
    bobs = photos.upload("bob", "ferry", "Ferry in Lisbon", tag=True)
    assert (bobs["tags"], bobs["location"]) == (["ferry"], "Lisbon")  # tagged for bob, by his own upload
    _to_tagging, back = photos.chain("alice")
    refused = httpx.put(
        f"{photos.image_store.url}/images/ferry/tags",
        json=["mine"],
        params={"location": "Elsewhere"},
        headers={"Authorization": f"Bearer {back}"},
    )
    assert refused.status_code == 403, refused.text
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert photos.image("ferry", "bob") == bobs


def test_tagging_acting_for_alice_writes_the_tags_on_her_image(photos: Photos) -> None:
    photos.upload("alice", "sunset", "Golden Sunset")
    tagged = httpx.post(f"{photos.image_store.url}/images/sunset/tagging", headers=photos.headers("alice"), timeout=30)
    assert tagged.status_code == 200, tagged.text
    assert tagged.json()["tags"] == ["golden", "sunset"]
    assert tagged.json()["tagged_by"] == ["tagging", "image-store"]  # the chain the image store saw
    assert photos.image("sunset") == tagged.json()


def test_alice_writing_her_own_tags_has_no_actor(photos: Photos) -> None:
    photos.upload("alice", "lake", "Lake")
    written = httpx.put(f"{photos.image_store.url}/images/lake/tags", json=["blue"], headers=photos.headers("alice"))
    assert written.status_code == 200, written.text
    assert (written.json()["tags"], written.json()["tagged_by"]) == (["blue"], [])


def test_tagging_acting_for_alice_cannot_tag_bobs_image_nor_delete_or_replace_hers(photos: Photos) -> None:
    photos.upload("alice", "garden", "Garden")
    photos.upload("bob", "boat", "Red Boat")
    to_tagging, back = photos.chain("alice")
    store = photos.image_store.url
    as_tagging = {"Authorization": f"Bearer {back}"}
    for refused in (
        httpx.put(f"{store}/images/boat/tags", json=["mine"], headers=as_tagging),
        httpx.delete(f"{store}/images/garden", headers=as_tagging),
        httpx.put(f"{store}/images/garden", params={"title": "Replaced"}, headers=as_tagging),
    ):
        assert refused.status_code == 403, refused.text
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # through the tagging service as well: it reads bob's image with its own account, the write is refused
    suggested = httpx.post(
        f"{photos.tagging.url}/images/boat/suggest", headers={"Authorization": f"Bearer {to_tagging}"}, timeout=30
    )
    assert suggested.status_code == 403, suggested.text
    # nor may alice ask the image store to have bob's image tagged
    asked = httpx.post(f"{store}/images/boat/tagging", headers=photos.headers("alice"))
    assert asked.status_code == 403, asked.text
    assert photos.image("boat", "bob")["tags"] == []
    garden = photos.image("garden")
    assert (garden["title"], garden["tags"]) == ("Garden", [])
    allowed = httpx.put(f"{store}/images/garden/tags", json=["green"], headers=as_tagging)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["tagged_by"] == ["tagging", "image-store"]


def test_the_token_the_image_store_sees_carries_both_actors_with_tagging_current(photos: Photos) -> None:
    _to_tagging, back = photos.chain("alice")
    tagging, image_store = account_of(photos, "tagging"), account_of(photos, "image-store")
    claims = claims_of(back)
    assert claims["sub"] == photos.users["alice"]
    assert claims["act"] == {
        "sub": tagging,
        "client_id": "tagging",
        "act": {"sub": image_store, "client_id": "image-store"},
    }
    assert claims["client_id"] == "tagging"
    assert claims["aud"] == ["image-store"]
    assert claims["scope"] == "image-store:images:write"  # tagging's [on_behalf] ∩ what it was given

    async def principal() -> tuple[Actor, ...]:
        async with Verifier(issuer=photos.chit.url, audience="image-store") as verifier:
            seen = await verifier.verify(back)
        assert seen.actor == Actor(tagging, "tagging")
        return seen.actors

    assert asyncio.run(principal()) == (Actor(tagging, "tagging"), Actor(image_store, "image-store"))


def test_the_image_store_cannot_exchange_a_token_already_carrying_it_in_its_chain(photos: Photos) -> None:
    _to_tagging, back = photos.chain("alice")
    assert_oauth_error(photos.exchange("image-store", back, audience="tagging"), 400, "invalid_request")
    assert_oauth_error(photos.exchange("image-store", back), 400, "invalid_request")


# --- a service as itself --------------------------------------------------------------------------------


def test_the_archiver_reads_every_image_and_writes_none(photos: Photos) -> None:
    photos.upload("alice", "alice-archived", "Alice's")
    photos.upload("bob", "bob-archived", "Bob's")
    done = subprocess.run(
        [sys.executable, str(PHOTOS / "archiver.py")],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CHIT_")},
            "CHIT_ISSUER": photos.chit.url,
            "ARCHIVER_CLIENT_SECRET": photos.secrets["archiver"],
            "IMAGE_STORE_URL": photos.image_store.url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    copies = {image["id"]: image for image in json.loads(done.stdout)}
    assert copies["alice-archived"]["owner_id"] == photos.users["alice"]
    assert copies["bob-archived"]["owner_id"] == photos.users["bob"]

    token = photos.own_token("archiver")
    claims = claims_of(token)
    assert "act" not in claims
    assert claims["client_id"] == "archiver"
    assert claims["sub"] == account_of(photos, "archiver")
    as_archiver = {"Authorization": f"Bearer {token}"}
    store = photos.image_store.url
    for refused in (
        httpx.put(f"{store}/images/alice-archived", params={"title": "Overwritten"}, headers=as_archiver),
        httpx.put(f"{store}/images/archiver-own", params={"title": "New"}, headers=as_archiver),
        httpx.put(f"{store}/images/bob-archived/tags", json=["x"], headers=as_archiver),
        httpx.delete(f"{store}/images/bob-archived", headers=as_archiver),
    ):
        assert refused.status_code == 403, refused.text
    assert photos.image("alice-archived")["title"] == "Alice's"
    # it acts for nobody: it has no token-exchange grant
    assert_oauth_error(photos.exchange("archiver", photos.token("alice")), 400, "unauthorized_client")


# --- later, for a user ------------------------------------------------------------------------------------


def wait_for_job(photos: Photos, image_id: str, username: str = "alice") -> str:
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(f"{photos.image_store.url}/images/{image_id}/tag-later", headers=photos.headers(username))
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        if status != "queued" or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_deferred_delegation_run_later_tags_the_image(photos: Photos) -> None:
    photos.upload("alice", "beach", "Beach Party")
    queued = httpx.post(f"{photos.image_store.url}/images/beach/tag-later", headers=photos.headers("alice"))
    assert queued.status_code == 202, queued.text
    assert queued.json() == {"job_id": "tag:beach", "status": "queued"}
    assert wait_for_job(photos, "beach") == "done"
    image = photos.image("beach")
    assert (image["tags"], image["tagged_by"]) == (["beach", "party"], ["tagging", "image-store"])
    created = [e for e in photos.audit("delegation.created") if e["detail"].get("job_id") == "tag:beach"]
    redeemed = [e for e in photos.audit("delegation.redeemed") if e["detail"].get("job_id") == "tag:beach"]
    assert [(e["subject"], e["actors"]) for e in created] == [(photos.users["alice"], ["image-store"])]
    assert redeemed
    assert {e["token_id"] for e in redeemed} == {created[0]["token_id"]}


def defer(photos: Photos, username: str, job_id: str, **options: Any) -> str:
    """What the image store's tag-later route does, with the user's token in hand."""
    identity = photos.identity("image-store")
    return identity.defer_sync(token=photos.token(username), scope=TAG_FOR_USER, job_id=job_id, **options)


def run_job(photos: Photos, handle: str, image_id: str) -> httpx.Response:
    """What the image store's job queue does with a handle."""
    auth = photos.identity("image-store").with_delegation(handle, audience="tagging")
    return httpx.post(f"{photos.tagging.url}/images/{image_id}/suggest", auth=auth, timeout=30)


def test_a_deferred_delegation_redeemed_later_acts_for_the_user(photos: Photos) -> None:
    photos.upload("alice", "forest", "Dark Forest")
    handle = defer(photos, "alice", "tag:forest")
    assert handle.startswith("chit_dd_")
    redeemed = photos.redeem(handle, audience="tagging")
    assert redeemed.status_code == 200, redeemed.text
    claims = claims_of(redeemed.json()["access_token"])
    assert claims["sub"] == photos.users["alice"]
    assert claims["act"] == {"sub": account_of(photos, "image-store"), "client_id": "image-store"}
    assert set(claims["scope"].split()) == set(TAG_FOR_USER)
    assert run_job(photos, handle, "forest").status_code == 200
    assert photos.image("forest")["tags"] == ["dark", "forest"]


def test_a_revoked_deferred_delegation_is_refused(photos: Photos) -> None:
    photos.upload("alice", "revoked", "Never Tagged")
    handle = defer(photos, "alice", "tag:revoked")
    earlier = access_token(photos.redeem(handle, audience="tagging"))
    image_store = photos.client("image-store")
    revoked = image_store.revoke(handle)
    assert revoked.status_code == 200, revoked.text
    assert image_store.introspect(earlier) == {"active": False}  # what it gave before ends with it
    assert_oauth_error(photos.redeem(handle, audience="tagging"), 400, "invalid_request")
    with pytest.raises(OAuth2Error) as refused:
        run_job(photos, handle, "revoked")
    assert refused.value.error == "invalid_request"
    assert photos.image("revoked")["tags"] == []


def test_an_expired_deferred_delegation_is_refused(photos: Photos) -> None:
    photos.upload("alice", "expired", "Too Late")
    handle = defer(photos, "alice", "tag:expired", expires_in=2)  # whole seconds: 2 leaves room to redeem first
    assert photos.redeem(handle, audience="tagging").status_code == 200
    time.sleep(3.1)
    assert_oauth_error(photos.redeem(handle, audience="tagging"), 400, "invalid_request")
    assert photos.image("expired")["tags"] == []


def test_a_user_who_lost_the_editor_role_is_no_longer_tagged_for(photos: Photos) -> None:
    photos.upload("erin", "erins", "Erin's Cat")
    handle = defer(photos, "erin", "tag:erins")
    photos.chit.cli_ok("revoke-grant", "user:erin", "tagging:editor")
    redeemed = photos.redeem(handle)
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["scope"] == "image-store:images:write"  # narrowed to what erin holds now
    assert claims_of(redeemed.json()["access_token"])["aud"] == ["image-store"]
    with pytest.raises(OAuth2Error) as refused:  # the job cannot reach the tagging service any more
        run_job(photos, handle, "erins")
    assert refused.value.error == "invalid_target"
    asked = httpx.post(f"{photos.image_store.url}/images/erins/tagging", headers=photos.headers("erin"))
    assert asked.status_code == 403, asked.text
    assert photos.image("erins", "erin")["tags"] == []


# --- impersonation -------------------------------------------------------------------------------------------


def test_impersonation_takes_the_impersonate_role_and_is_audited(photos: Photos) -> None:
    assert_oauth_error(photos.exchange("image-store", requested_subject="alice"), 400, "unauthorized_client")
    photos.chit.cli_ok("grant", "client:image-store", "chit:users:impersonate")
    try:
        issued = photos.exchange("image-store", requested_subject="alice")
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        claims = claims_of(token)
        assert claims["sub"] == photos.users["alice"]
        assert claims["act"] == {"sub": account_of(photos, "image-store"), "client_id": "image-store"}
        assert set(claims["scope"].split()) == set(TAG_FOR_USER)
        events = [e for e in photos.audit("token.impersonated") if e["token_id"] == claims["jti"]]
        assert len(events) == 1
        event = events[0]
        assert (event["subject"], event["client_id"], event["actors"]) == (
            photos.users["alice"],
            "image-store",
            ["image-store"],
        )
        assert event["detail"]["username"] == "alice"
    finally:
        photos.chit.cli_ok("revoke-grant", "client:image-store", "chit:users:impersonate")
    assert_oauth_error(photos.exchange("image-store", requested_subject="alice"), 400, "unauthorized_client")


# --- the audit trail -------------------------------------------------------------------------------------------


def test_the_audit_log_shows_each_chain(photos: Photos) -> None:
    photos.upload("alice", "audited", "Audit Trail")
    tagged = httpx.post(f"{photos.image_store.url}/images/audited/tagging", headers=photos.headers("alice"), timeout=30)
    assert tagged.status_code == 200, tagged.text
    exchanges = [e for e in photos.audit("token.issued") if e["subject"] == photos.users["alice"] and e["actors"]]
    chains = {(e["client_id"], tuple(e["actors"])) for e in exchanges}
    assert ("image-store", ("image-store",)) in chains
    assert ("tagging", ("tagging", "image-store")) in chains
