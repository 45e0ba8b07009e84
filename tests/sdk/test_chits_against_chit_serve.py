"""The SDK and a real ``chit serve``: a chit minted by token exchange (``requested_token_type`` the chit type) is
verified with the root key discovery publishes under its id, attenuated offline and decided like the JWT
the same exchange would give."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    IMAGE_STORE_MANIFEST,
    TAGGING_MANIFEST,
    ChitServer,
    ServiceClient,
    access_token,
    add_tagging_user,
    register_manifest,
)

from chit import InsufficientScopeError, Verifier, attenuate

pytestmark = pytest.mark.anyio
BISCUIT_TYPE = "urn:chit:token-type:biscuit"
WRITE_TAGS = "tagging:tags:write"


async def test_a_chit_from_chit_serve_verifies_narrows_and_decides(server: ChitServer, tmp_path: Path) -> None:
    register_manifest(server, tmp_path, "tagging", TAGGING_MANIFEST)
    image_store = ServiceClient(
        server, "image-store", register_manifest(server, tmp_path, "image-store", IMAGE_STORE_MANIFEST)
    )
    user_id, user = add_tagging_user(server, "alice", "chit-sdk-password-1")
    response = image_store.exchange(user, requested_token_type=BISCUIT_TYPE)
    assert response.status_code == 200, response.text
    chit = response.json()["access_token"]
    jwt = access_token(image_store.exchange(user))

    async with Verifier(server.url, "tagging") as verifier:
        from_chit, from_jwt = await verifier.verify(chit), await verifier.verify(jwt)
        assert from_chit.kind == "chit"
        for name in ("subject", "client_id", "permissions", "actors"):
            assert getattr(from_chit, name) == getattr(from_jwt, name), name
        assert from_chit.subject == user_id
        assert from_chit.actor is not None
        assert from_chit.actor.client_id == "image-store"

        one_image = attenuate(chit, operations=[WRITE_TAGS], resource="img-7")  # this verifier holds the key now
        narrowed = (await verifier.verify(one_image)).for_request([WRITE_TAGS], method="POST", path="/tags")
        narrowed.require(WRITE_TAGS, resource="img-7")
        with pytest.raises(InsufficientScopeError, match='check if resource\\("img-7"\\)'):
            narrowed.require(WRITE_TAGS, resource="img-8")
