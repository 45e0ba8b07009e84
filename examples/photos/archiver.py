"""The photo example's archiver: a nightly job that copies every user's image with its own service
account. It acts for nobody, so its tokens carry no actor; run it with ``python archiver.py``."""

import asyncio
import json
import os

import httpx

from chit import ServiceIdentity

IMAGE_STORE_URL = os.environ.get("IMAGE_STORE_URL", "http://127.0.0.1:8701")

# ARCHIVER_CLIENT_SECRET, and the auth server at CHIT_ISSUER (http://127.0.0.1:8700 unless set); unset, it exits
identity = ServiceIdentity.from_env("archiver")


async def archive() -> list[dict]:
    """Every user's images, each read in full: the archiver holds image-store:images:read-any."""
    async with httpx.AsyncClient(base_url=IMAGE_STORE_URL, auth=identity) as image_store:
        listing = await image_store.get("/images")
        listing.raise_for_status()
        copies = []
        for image in listing.json():
            response = await image_store.get(f"/images/{image['id']}")
            response.raise_for_status()
            copies.append(response.json())
    return copies


if __name__ == "__main__":
    print(json.dumps(asyncio.run(archive())))
