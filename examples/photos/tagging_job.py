"""The photo example's tagging service, as a job that reads images with its own service account."""

import os

import httpx

from chit import ServiceIdentity

identity = ServiceIdentity(
    "tagging",
    os.environ["TAGGING_CLIENT_SECRET"],
    issuer=os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700"),
)


async def fetch_image(image_store: httpx.AsyncClient, image_id: str) -> dict:
    """Read any user's image: the tagging account holds image-store:images:read-any."""
    response = await image_store.get(f"/images/{image_id}", auth=identity)
    response.raise_for_status()
    return response.json()
