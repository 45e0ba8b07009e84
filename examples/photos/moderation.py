"""The photo example's moderation service: it deletes the images flagged explicit with its own service
account, which holds image-store:images:moderate and nothing else at the image store. It reads no
image: which images are flagged is all it is told, and the image store refuses to let it delete
any other. A moderator (``moderation:moderator``) starts a sweep with ``POST /sweeps``; a nightly
job runs ``python moderation.py``."""

import asyncio
import json
import os

import httpx
from fastapi import FastAPI, Security

from chit import Principal, ServiceIdentity, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
IMAGE_STORE_URL = os.environ.get("IMAGE_STORE_URL", "http://127.0.0.1:8701")

identity = ServiceIdentity.from_env("moderation", issuer=ISSUER)  # MODERATION_CLIENT_SECRET; unset, it exits
verifier = Verifier(issuer=ISSUER, audience="moderation", identity=identity)  # follows the revocation feed
app = FastAPI(title="moderation", lifespan=verifier.lifespan)  # the revocation list is loaded before traffic


async def sweep() -> list[str]:
    """Delete every image flagged explicit, as the moderation service itself: the ids deleted."""
    async with httpx.AsyncClient(base_url=IMAGE_STORE_URL, auth=identity) as image_store:
        flagged = await image_store.get("/flagged")
        flagged.raise_for_status()
        deleted = []
        for image in flagged.json():
            response = await image_store.delete(f"/flagged/{image['id']}")
            if response.status_code != 404:  # deleted meanwhile by its owner: nothing left to do
                response.raise_for_status()
                deleted.append(image["id"])
    return deleted


@app.post("/sweeps")
async def run_sweep(principal: Principal = Security(verifier, scopes=["moderation:sweeps:run"])) -> dict:
    principal.require_actor(None)  # a moderator herself, never a service acting for her
    return {"deleted": await sweep()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(sweep())))
