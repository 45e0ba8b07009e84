"""The photo example's image store: a FastAPI service that decides locally with chit, and has the
tagging service tag a user's image, acting for that user: during the upload, on request, or later.

An image is flagged explicit by its owner, when she uploads it. The moderation service may delete a
flagged image of anyone, and no other: a moderator never decides alone what is explicit."""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import InsufficientScopeError, OAuth2Error, Principal, ServiceIdentity, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
TAGGING_URL = os.environ.get("TAGGING_URL", "http://127.0.0.1:8702")
JOBS_EVERY = float(os.environ.get("IMAGE_STORE_JOBS_EVERY", "60"))  # seconds between two runs of the job queue

identity = ServiceIdentity.from_env("image-store", issuer=ISSUER)  # IMAGE_STORE_CLIENT_SECRET; unset, it exits
verifier = Verifier(issuer=ISSUER, audience="image-store", identity=identity)  # follows the revocation feed


@dataclass
class Image:
    id: str
    owner_id: str
    title: str
    tags: list[str] = field(default_factory=list)
    tagged_by: list[str] = field(default_factory=list)  # the services that wrote the tags, current actor first
    explicit: bool = False  # flagged by the owner: the moderation service may delete it
    location: str | None = None  # where it was taken, as the tagging service found out

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Job:
    image_id: str
    handle: str = field(repr=False)  # a deferred delegation is a secret, like a password
    status: str = "queued"


IMAGES: dict[str, Image] = {}
JOBS: dict[str, Job] = {}


def load(image_id: str) -> Image:
    if image_id not in IMAGES:
        raise HTTPException(404, "no such image")
    return IMAGES[image_id]


async def tag_for_user(image_id: str) -> httpx.Response:
    """Ask the tagging service to tag the image for the user of the request: her token, exchanged."""
    async with httpx.AsyncClient(base_url=TAGGING_URL) as tagging:
        return await tagging.post(f"/images/{image_id}/suggest", auth=identity.for_user("tagging"))


async def run_jobs() -> None:
    """Run the queued tagging jobs, long after the users asked: each acts for its user by its handle."""
    async with httpx.AsyncClient(base_url=TAGGING_URL) as tagging:
        for job in [job for job in JOBS.values() if job.status == "queued"]:
            try:
                auth = identity.with_delegation(job.handle, audience="tagging")
                response = await tagging.post(f"/images/{job.image_id}/suggest", auth=auth)
                job.status = "done" if response.is_success else f"refused by tagging: {response.status_code}"
            except OAuth2Error as exc:  # the handle was revoked or expired, or the user lost the right
                job.status = f"refused: {exc.error}"
            except httpx.HTTPError:  # tagging is unreachable: the job stays queued for the next run
                job.status = "queued"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async def every() -> None:
        while True:
            await asyncio.sleep(JOBS_EVERY)
            await run_jobs()

    async with verifier.lifespan(app):  # the revocation list is loaded before the first request
        worker = asyncio.create_task(every())
        yield
        worker.cancel()


# exception_handlers: the InsufficientScopeError delete_flagged raises answers 403, as the dependency's do
app = FastAPI(title="image store", lifespan=lifespan, exception_handlers=verifier.exception_handlers)


@app.get("/images")
async def list_images(principal: Principal = Security(verifier, scopes=["image-store:images:read"])) -> list[dict]:
    readable = (i for i in IMAGES.values() if principal.owns_or_can(i.owner_id, "image-store:images:read-any"))
    return [image.as_dict() for image in readable]


@app.put("/images/{image_id}")
async def upload_image(
    image_id: str,
    title: str,
    explicit: bool = False,
    tag: bool = True,
    principal: Principal = Security(verifier, scopes=["image-store:images:write"]),
) -> dict:
    principal.require_actor(None)  # the user herself, never a service acting for her
    if image_id in IMAGES:  # replacing is for the owner only
        principal.require_owner(IMAGES[image_id].owner_id)
    IMAGES[image_id] = Image(image_id, principal.subject, title, explicit=explicit)
    if tag and principal.can("tagging:tags:write"):  # tagged for her before the answer, if she lets tagging
        with suppress(OAuth2Error, httpx.HTTPError):  # else the upload stands untagged: POST .../tagging retries
            await tag_for_user(image_id)
    return load(image_id).as_dict()


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


@app.get("/flagged")
async def list_flagged(principal: Principal = Security(verifier, scopes=["image-store:images:moderate"])) -> list[dict]:
    """Only what moderation needs of the flagged images: which, and whose; never their content."""
    return [{"id": i.id, "owner_id": i.owner_id} for i in IMAGES.values() if i.explicit]


@app.delete("/flagged/{image_id}", status_code=204)
async def delete_flagged(
    image_id: str, principal: Principal = Security(verifier, scopes=["image-store:images:moderate"])
) -> None:
    if not load(image_id).explicit:  # moderating deletes what is flagged explicit, nothing else
        raise InsufficientScopeError(f"image {image_id} is not flagged explicit")
    del IMAGES[image_id]


@app.put("/images/{image_id}/tags")
async def write_tags(
    image_id: str,
    tags: list[str],
    location: str | None = None,  # left as it is when not given
    principal: Principal = Security(verifier, scopes=["image-store:images:write"]),
) -> dict:
    principal.require_actor(None, "tagging")  # the owner, or the tagging service acting for her
    image = load(image_id)
    principal.require_owner(image.owner_id)
    image.tags, image.tagged_by = tags, [actor.name for actor in principal.actors]
    image.location = location or image.location
    return image.as_dict()


@app.post("/images/{image_id}/tagging")
async def tag_now(
    image_id: str,
    principal: Principal = Security(verifier, scopes=["image-store:images:write", "tagging:tags:write"]),
) -> dict:
    principal.require_owner(load(image_id).owner_id)
    response = await tag_for_user(image_id)
    if response.is_error:
        raise HTTPException(502, f"the tagging service answered {response.status_code}")
    return load(image_id).as_dict()


@app.post("/images/{image_id}/tag-later", status_code=202)
async def tag_later(
    image_id: str,
    principal: Principal = Security(verifier, scopes=["image-store:images:write", "tagging:tags:write"]),
) -> dict:
    principal.require_owner(load(image_id).owner_id)
    job_id = f"tag:{image_id}"
    handle = await identity.defer(scope=["tagging:tags:write", "image-store:images:write"], job_id=job_id)
    JOBS[job_id] = Job(image_id, handle)
    return {"job_id": job_id, "status": "queued"}


@app.get("/images/{image_id}/tag-later")
async def tagging_status(
    image_id: str, principal: Principal = Security(verifier, scopes=["image-store:images:read"])
) -> dict:
    principal.require_owner(load(image_id).owner_id)
    job_id = f"tag:{image_id}"
    if job_id not in JOBS:
        raise HTTPException(404, "no tagging job for this image")
    return {"job_id": job_id, "status": JOBS[job_id].status}
