"""The photo example's tagging service: it reads an image with its own service account, suggests tags
and a location, and writes them back to the image store for the user it acts for."""

import os

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import Principal, ServiceIdentity, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
IMAGE_STORE_URL = os.environ.get("IMAGE_STORE_URL", "http://127.0.0.1:8701")

identity = ServiceIdentity.from_env("tagging", issuer=ISSUER)  # TAGGING_CLIENT_SECRET; unset, it exits saying how
verifier = Verifier(issuer=ISSUER, audience="tagging", identity=identity)  # follows the revocation feed
app = FastAPI(title="tagging", lifespan=verifier.lifespan)  # the revocation list is loaded before traffic


async def fetch_image(image_store: httpx.AsyncClient, image_id: str) -> dict:
    """Read any user's image: the tagging account holds image-store:images:read-any."""
    response = await image_store.get(f"/images/{image_id}", auth=identity)
    response.raise_for_status()
    return response.json()


@app.post("/images/{image_id}/suggest")
async def suggest_tags(image_id: str, principal: Principal = Security(verifier, scopes=["tagging:tags:write"])) -> dict:
    principal.require_actor(None, "image-store")  # the user, or the image store acting for her
    async with httpx.AsyncClient(base_url=IMAGE_STORE_URL) as image_store:
        image = await fetch_image(image_store, image_id)
        subject, _, place = image["title"].partition(" in ")  # the analysis, kept simple: "Sunset in Porto"
        tags = sorted({word.lower() for word in subject.split()})
        # writing is for the user: her token (through the image store) exchanged for one to the image store
        written = await image_store.put(
            f"/images/{image_id}/tags",
            json=tags,
            params={"location": place} if place else {},
            auth=identity.for_user("image-store"),
        )
    if written.is_error:
        raise HTTPException(written.status_code, written.json()["detail"])
    return written.json()
