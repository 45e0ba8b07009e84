"""The photo example runs as written, against a real auth server: services decide locally.

The image store is the DESIGN's FastAPI example (``examples/photos/image_store.py``), served in
process through ``httpx.ASGITransport``; users log in at the real server; the tagging service
(``examples/photos/tagging.py``) reads images with its own service account. Delegation between the
services, run as real processes, is ``tests/test_photo_delegation.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from types import ModuleType
from typing import Any

import httpx
import pytest
from helpers import ROOT, ChitServer, ModuleServers

PHOTOS = ROOT / "examples" / "photos"
PASSWORD = "photo-password-1"


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("photos")
    server.secrets = {  # type: ignore[attr-defined]
        name: server.cli_ok("service", "register", str(PHOTOS / f"{name}.toml"), "--json").json()["client_secret"]
        for name in ("image-store", "tagging")
    }
    server.add_user("alice", PASSWORD, "--role", "image-store:owner")
    server.add_user("bob", PASSWORD, "--role", "image-store:owner")
    server.add_user("carol", PASSWORD, "--role", "image-store:viewer")
    return server


def load_example(name: str, chit: ChitServer) -> ModuleType:
    """A fresh copy of an example module, configured through its environment as a deployment would."""
    spec = importlib.util.spec_from_file_location(f"photos_{name}_{id(chit)}", PHOTOS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    secrets = chit.secrets  # type: ignore[attr-defined]
    settings = {
        "CHIT_ISSUER": chit.url,
        "IMAGE_STORE_CLIENT_SECRET": secrets["image-store"],
        "TAGGING_CLIENT_SECRET": secrets["tagging"],
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:  # the modules read their settings when imported; later servers must not inherit them
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return module


def login(chit: ChitServer, username: str) -> dict[str, str]:
    response = httpx.post(
        chit.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def run(chit: ChitServer, scenario: Any) -> None:
    store = load_example("image_store", chit)
    tagging = load_example("tagging", chit)

    async def main() -> None:
        transport = httpx.ASGITransport(app=store.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://image-store") as client:
            await scenario(client, tagging)
        await store.verifier.aclose()

    asyncio.run(main())


def test_owner_uploads_reads_and_deletes_their_image(chit: ChitServer) -> None:
    alice = login(chit, "alice")

    async def scenario(client: httpx.AsyncClient, _tagging: ModuleType) -> None:
        uploaded = await client.put("/images/sunset", params={"title": "Sunset"}, headers=alice)
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["owner_id"].startswith("usr_")
        read = await client.get("/images/sunset", headers=alice)
        assert read.json() == uploaded.json()
        deleted = await client.delete("/images/sunset", headers=alice)
        assert deleted.status_code == 204
        assert (await client.get("/images/sunset", headers=alice)).status_code == 404

    run(chit, scenario)


def test_another_user_gets_403_from_the_route_body(chit: ChitServer) -> None:
    alice, bob = login(chit, "alice"), login(chit, "bob")

    async def scenario(client: httpx.AsyncClient, _tagging: ModuleType) -> None:
        assert (await client.put("/images/cat", params={"title": "Cat"}, headers=alice)).status_code == 200
        for answer in (
            await client.get("/images/cat", headers=bob),
            await client.delete("/images/cat", headers=bob),
            await client.put("/images/cat", params={"title": "Mine now"}, headers=bob),
        ):
            assert answer.status_code == 403
            assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
        assert (await client.get("/images/cat", headers=alice)).json()["title"] == "Cat"

    run(chit, scenario)


def test_a_user_lists_her_own_images(chit: ChitServer) -> None:
    alice, bob = login(chit, "alice"), login(chit, "bob")

    async def scenario(client: httpx.AsyncClient, _tagging: ModuleType) -> None:
        assert (await client.put("/images/alice-1", params={"title": "One"}, headers=alice)).status_code == 200
        assert (await client.put("/images/bob-1", params={"title": "Two"}, headers=bob)).status_code == 200
        listed = await client.get("/images", headers=alice)
        assert listed.status_code == 200, listed.text
        assert [image["id"] for image in listed.json()] == ["alice-1"]
        tagged = await client.put("/images/alice-1/tags", json=["one"], headers=alice)
        assert (tagged.json()["tags"], tagged.json()["tagged_by"]) == (["one"], [])
        assert (await client.put("/images/bob-1/tags", json=["mine"], headers=alice)).status_code == 403

    run(chit, scenario)


def test_a_viewer_cannot_upload_and_no_token_gets_a_bare_challenge(chit: ChitServer) -> None:
    carol = login(chit, "carol")

    async def scenario(client: httpx.AsyncClient, _tagging: ModuleType) -> None:
        refused = await client.put("/images/dog", params={"title": "Dog"}, headers=carol)
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
        anonymous = await client.get("/images/dog")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        forged = await client.get("/images/dog", headers={"Authorization": "Bearer not.a.token"})
        assert forged.status_code == 401
        assert 'error="invalid_token"' in forged.headers["www-authenticate"]

    run(chit, scenario)


def test_the_tagging_service_reads_any_image_with_its_service_account(chit: ChitServer) -> None:
    alice = login(chit, "alice")

    async def scenario(client: httpx.AsyncClient, tagging: ModuleType) -> None:
        assert (await client.put("/images/tree", params={"title": "Tree"}, headers=alice)).status_code == 200
        image = await tagging.fetch_image(client, "tree")
        assert image["title"] == "Tree"
        assert tagging.identity.requests == 1
        await tagging.fetch_image(client, "tree")
        assert tagging.identity.requests == 1  # the service token is cached
        refused = await client.delete("/images/tree", auth=tagging.identity)  # it may read, never delete
        assert refused.status_code == 403

    run(chit, scenario)


def test_the_openapi_shows_the_oauth2_scheme_and_each_routes_permissions(chit: ChitServer) -> None:
    store = load_example("image_store", chit)
    schema = store.app.openapi()
    scheme_name, scheme = next(iter(schema["components"]["securitySchemes"].items()))
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["clientCredentials"]["tokenUrl"] == chit.token_url
    read = schema["paths"]["/images/{image_id}"]["get"]["security"]
    assert read == [{scheme_name: ["image-store:images:read"]}]
    tag_now = schema["paths"]["/images/{image_id}/tagging"]["post"]["security"]
    assert tag_now == [{scheme_name: ["image-store:images:write", "tagging:tags:write"]}]


def test_readme_shows_the_example_files_as_they_are() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n# (examples/\S+)\n(.*?)```", text, flags=re.S)
    assert {path for path, _ in blocks} == {
        "examples/photos/image_store.py",
        "examples/photos/tagging.py",
        "examples/photos/archiver.py",
        "examples/photos/moderation.py",
        "examples/shop/payment.py",
    }
    for path, body in blocks:
        assert (ROOT / path).read_text() == body, path
