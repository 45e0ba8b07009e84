"""The photo example's image store: a FastAPI service that decides locally with chit."""

import os
from dataclasses import asdict, dataclass

from fastapi import FastAPI, HTTPException, Security

from chit import Principal, Verifier

verifier = Verifier(issuer=os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700"), audience="image-store")
app = FastAPI(title="image store")


@dataclass
class Image:
    id: str
    owner_id: str
    title: str

    def as_dict(self) -> dict:
        return asdict(self)


IMAGES: dict[str, Image] = {}


def load(image_id: str) -> Image:
    if image_id not in IMAGES:
        raise HTTPException(404, "no such image")
    return IMAGES[image_id]


@app.put("/images/{image_id}")
async def upload_image(
    image_id: str, title: str, principal: Principal = Security(verifier, scopes=["image-store:images:write"])
) -> dict:
    if image_id in IMAGES:  # replacing is for the owner only
        principal.require_owner(IMAGES[image_id].owner_id)
    IMAGES[image_id] = Image(image_id, principal.subject, title)
    return IMAGES[image_id].as_dict()


@app.get("/images/{image_id}")
async def read_image(
    image_id: str, principal: Principal = Security(verifier, scopes=["image-store:images:read"])
) -> dict:
    image = load(image_id)
    principal.require_owner(image.owner_id, unless="image-store:images:read-any")
    return image.as_dict()


@app.delete("/images/{image_id}", status_code=204)
async def delete_image(
    image_id: str, principal: Principal = Security(verifier, scopes=["image-store:images:delete"])
) -> None:
    principal.require_owner(load(image_id).owner_id)
    del IMAGES[image_id]
