"""The photo example's client app (``examples/photos/client.py``) run as a user would run it, against a
real ``chit serve``, the image store and the tagging service as uvicorn processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from helpers import ROOT, ChitServer, ModuleServers, ServiceProcess, free_port, register_manifest_file

PHOTOS = ROOT / "examples" / "photos"
PASSWORD = "client-password-1"


@dataclass
class Platform:
    chit: ChitServer
    image_store: ServiceProcess

    def client(self, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        """``python client.py ARGS`` with the password on its standard input."""
        return subprocess.run(
            [sys.executable, str(PHOTOS / "client.py"), *args],
            input=password + "\n",
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("CHIT_")},
                "CHIT_ISSUER": self.chit.url,
                "IMAGE_STORE_URL": self.image_store.url,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def platform(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    chit = module_server("photo-client")
    secrets = {name: register_manifest_file(chit, PHOTOS / f"{name}.toml") for name in ("image-store", "tagging")}
    for name in ("alice", "bob"):
        chit.add_user(name, PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    logs = tmp_path_factory.mktemp("client-services")
    image_store = ServiceProcess("image_store", PHOTOS, free_port(), logs / "image_store.log")
    tagging = ServiceProcess("tagging", PHOTOS, free_port(), logs / "tagging.log")
    image_store.env = {
        "CHIT_ISSUER": chit.url,
        "IMAGE_STORE_CLIENT_SECRET": secrets["image-store"],
        "TAGGING_URL": tagging.url,
    }
    tagging.env = {
        "CHIT_ISSUER": chit.url,
        "TAGGING_CLIENT_SECRET": secrets["tagging"],
        "IMAGE_STORE_URL": image_store.url,
    }
    try:
        image_store.start()
        tagging.start()
        yield Platform(chit, image_store)
    finally:
        tagging.stop()
        image_store.stop()


def test_alice_uploads_lists_her_images_and_is_refused_bobs(platform: Platform) -> None:
    bob = platform.client("bob", "--upload", "boat", "Red Boat in Lisbon")
    assert bob.returncode == 0, bob.stderr
    alice = platform.client("alice", "--upload", "sunset", "Golden Sunset in Porto", "--peek", "boat")
    assert alice.returncode == 0, alice.stderr
    assert alice.stdout.splitlines()[:3] == [
        f"alice logged in at {platform.chit.url} through chit-cli",
        "alice uploads sunset: 200: sunset (Golden Sunset in Porto: golden, sunset at Porto,"
        " tagged by tagging through image-store)",
        "alice lists the images: 200 sunset (Golden Sunset in Porto: golden, sunset at Porto,"
        " tagged by tagging through image-store)",
    ]
    assert alice.stdout.splitlines()[-1].startswith(
        "alice reads boat: 403 refused: not the owner of the resource and missing image-store:images:read-any"
    )
    again = platform.client("bob", "--peek", "boat")
    assert again.stdout.splitlines()[1:] == [
        "bob lists the images: 200 boat (Red Boat in Lisbon: boat, red at Lisbon,"
        " tagged by tagging through image-store)",
        "bob reads boat: 200: boat (Red Boat in Lisbon: boat, red at Lisbon, tagged by tagging through image-store)",
    ]


def test_a_wrong_password_ends_with_the_reason(platform: Platform) -> None:
    refused = platform.client("alice", "--peek", "boat", password="not-her-password")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("alice could not log in: ")
