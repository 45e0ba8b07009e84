"""The photo example's moderation service (``examples/photos/moderation.py``) over HTTP: a real
``chit serve``, the image store and the moderation service as uvicorn processes.

Moderation deletes the images their owners flagged explicit, with its own service account holding
``image-store:images:moderate``; the image store's route body refuses it any other image, and the
permission gives it nothing else: it reads, replaces and tags no image.
"""

from __future__ import annotations

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
    claims_of,
    free_port,
    register_manifest_file,
    user_token,
)

PHOTOS = ROOT / "examples" / "photos"
PASSWORD = "moderation-password-1"


@dataclass
class Moderated:
    chit: ChitServer
    secrets: dict[str, str]
    image_store: ServiceProcess
    moderation: ServiceProcess

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {user_token(self.chit, username, PASSWORD)}"}

    def as_moderation(self) -> dict[str, str]:
        """The moderation service's own token, as its sweep presents it."""
        token = ServiceClient(self.chit, "moderation", self.secrets["moderation"]).own_token()
        return {"Authorization": f"Bearer {token}"}

    def upload(self, username: str, image_id: str, *, explicit: bool = False) -> dict[str, Any]:
        response = httpx.put(
            f"{self.image_store.url}/images/{image_id}",
            params={"title": image_id.title(), "explicit": explicit},
            headers=self.headers(username),
        )
        assert response.status_code == 200, response.text
        image: dict[str, Any] = response.json()
        return image

    def exists(self, image_id: str, owner: str) -> bool:
        response = httpx.get(f"{self.image_store.url}/images/{image_id}", headers=self.headers(owner))
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    def sweep(self, username: str) -> httpx.Response:
        return httpx.post(f"{self.moderation.url}/sweeps", headers=self.headers(username), timeout=30)


@pytest.fixture(scope="module")
def moderated(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moderated]:
    chit = module_server("photo-moderation")
    secrets = {name: register_manifest_file(chit, PHOTOS / f"{name}.toml") for name in ("image-store", "moderation")}
    for name in ("alice", "bob"):
        chit.add_user(name, PASSWORD, "--role", "image-store:owner")
    chit.add_user("mona", PASSWORD, "--role", "moderation:moderator")
    chit.add_user("carol", PASSWORD, "--role", "image-store:viewer")
    logs = tmp_path_factory.mktemp("moderation-services")
    image_store = ServiceProcess("image_store", PHOTOS, free_port(), logs / "image_store.log")
    moderation = ServiceProcess("moderation", PHOTOS, free_port(), logs / "moderation.log")
    image_store.env = {"CHIT_ISSUER": chit.url, "IMAGE_STORE_CLIENT_SECRET": secrets["image-store"]}
    moderation.env = {
        "CHIT_ISSUER": chit.url,
        "MODERATION_CLIENT_SECRET": secrets["moderation"],
        "IMAGE_STORE_URL": image_store.url,
    }
    try:
        image_store.start()
        moderation.start()
        yield Moderated(chit, secrets, image_store, moderation)
    finally:
        moderation.stop()
        image_store.stop()


def test_a_sweep_deletes_the_flagged_images_and_keeps_the_others(moderated: Moderated) -> None:
    assert moderated.upload("alice", "party", explicit=True)["explicit"] is True
    moderated.upload("bob", "beach", explicit=True)
    moderated.upload("alice", "kitten")
    swept = moderated.sweep("mona")
    assert swept.status_code == 200, swept.text
    assert sorted(swept.json()["deleted"]) == ["beach", "party"]
    assert not moderated.exists("party", "alice")
    assert not moderated.exists("beach", "bob")
    assert moderated.exists("kitten", "alice")
    assert moderated.sweep("mona").json() == {"deleted": []}


def test_the_nightly_job_sweeps_as_the_moderation_service(moderated: Moderated) -> None:
    moderated.upload("bob", "nightly", explicit=True)
    done = subprocess.run(
        [sys.executable, str(PHOTOS / "moderation.py")],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CHIT_")},
            "CHIT_ISSUER": moderated.chit.url,
            "MODERATION_CLIENT_SECRET": moderated.secrets["moderation"],
            "IMAGE_STORE_URL": moderated.image_store.url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "nightly" in done.stdout
    assert not moderated.exists("nightly", "bob")


def test_moderation_is_refused_an_image_that_is_not_flagged(moderated: Moderated) -> None:
    moderated.upload("alice", "garden")
    refused = httpx.delete(f"{moderated.image_store.url}/flagged/garden", headers=moderated.as_moderation())
    assert refused.status_code == 403, refused.text
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert "not flagged explicit" in refused.json()["detail"]
    assert moderated.exists("garden", "alice")


def test_moderation_reads_replaces_tags_and_deletes_nothing_else(moderated: Moderated) -> None:
    moderated.upload("alice", "secret", explicit=True)
    store, as_moderation = moderated.image_store.url, moderated.as_moderation()
    claims = claims_of(as_moderation["Authorization"].removeprefix("Bearer "))
    assert claims["scope"] == "image-store:images:moderate"
    assert "act" not in claims  # it acts for nobody
    flagged = httpx.get(f"{store}/flagged", headers=as_moderation)
    assert {"id": "secret", "owner_id": claims_of(moderated.headers("alice")["Authorization"][7:])["sub"]} in (
        flagged.json()
    )
    for refused in (
        httpx.get(f"{store}/images", headers=as_moderation),
        httpx.get(f"{store}/images/secret", headers=as_moderation),
        httpx.put(f"{store}/images/secret", params={"title": "Replaced"}, headers=as_moderation),
        httpx.put(f"{store}/images/secret/tags", json=["x"], headers=as_moderation),
        httpx.delete(f"{store}/images/secret", headers=as_moderation),
    ):
        assert refused.status_code == 403, refused.text
    assert moderated.exists("secret", "alice")


def test_a_user_moderates_only_when_granted_the_permission(moderated: Moderated) -> None:
    moderated.upload("bob", "flagged-by-bob", explicit=True)
    store = moderated.image_store.url
    for username in ("alice", "carol"):  # an owner of other images, a viewer: neither moderates
        headers = moderated.headers(username)
        assert httpx.delete(f"{store}/flagged/flagged-by-bob", headers=headers).status_code == 403
        assert httpx.get(f"{store}/flagged", headers=headers).status_code == 403
        assert httpx.delete(f"{store}/images/flagged-by-bob", headers=headers).status_code == 403
        assert moderated.sweep(username).status_code == 401  # nor starts a sweep: her token is not for moderation
    moderated.chit.cli_ok("role", "create", "image-moderator", "--permission", "image-store:images:moderate")
    moderated.chit.cli_ok("grant", "user:carol", "image-moderator")
    try:
        allowed = httpx.delete(f"{store}/flagged/flagged-by-bob", headers=moderated.headers("carol"))
        assert allowed.status_code == 204, allowed.text
    finally:
        moderated.chit.cli_ok("revoke-grant", "user:carol", "image-moderator")
    assert not moderated.exists("flagged-by-bob", "bob")


def test_a_moderator_logged_out_everywhere_is_refused_within_seconds(moderated: Moderated) -> None:
    before = moderated.headers("mona")
    assert httpx.post(f"{moderated.moderation.url}/sweeps", headers=before, timeout=30).status_code == 200
    moderated.chit.cli_ok("user", "logout-everywhere", "mona")
    deadline = time.monotonic() + 5  # the service follows the revocation feed: no call per request
    while (answer := httpx.post(f"{moderated.moderation.url}/sweeps", headers=before, timeout=30)).status_code == 200:
        assert time.monotonic() < deadline, "the moderation service still accepts a revoked token"
        time.sleep(0.1)
    assert answer.status_code == 401, answer.text
    time.sleep(1.1)  # the logout took everything issued in its second too (whole seconds)
    assert moderated.sweep("mona").status_code == 200  # a new login works
