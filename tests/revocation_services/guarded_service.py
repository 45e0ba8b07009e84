"""A service on the SDK that follows the revocation feed: ``SERVICE_ID`` reads and writes its things for
whoever its verifier accepts. The revocation tests run two of them side by side, on the embedded feed
and on Redis (``REDIS_URL``); ``MAX_STALENESS`` sets how stale its revocation list may grow before
writes are refused."""

import os

from fastapi import FastAPI, Security

from chit import Principal, ServiceIdentity, Verifier
from chit.sdk import metrics_app

ISSUER = os.environ["CHIT_ISSUER"]
SERVICE = os.environ["SERVICE_ID"]

identity = ServiceIdentity(SERVICE, os.environ["SERVICE_CLIENT_SECRET"], issuer=ISSUER)
verifier = Verifier(
    issuer=ISSUER,
    audience=SERVICE,
    identity=identity,  # follows the feed with the service's own token
    redis_url=os.environ.get("REDIS_URL") or None,
    max_staleness=float(os.environ.get("MAX_STALENESS", "30")),
)
app = FastAPI(title=SERVICE, lifespan=verifier.lifespan)  # the list is bootstrapped before traffic
app.mount("/metrics", metrics_app())


@app.get("/things")
async def read(principal: Principal = Security(verifier, scopes=[f"{SERVICE}:things:read"])) -> dict:
    return {"subject": principal.subject, "kind": principal.kind, "actors": [a.client_id for a in principal.actors]}


@app.post("/things")
async def write(principal: Principal = Security(verifier, scopes=[f"{SERVICE}:things:write"])) -> dict:
    return {"written_by": principal.subject}


@app.get("/revocations")
async def revocations() -> dict:
    """How this service's list stands (for tests and operators)."""
    feed = verifier.feed
    return {
        "size": verifier.revocations.size if verifier.revocations is not None else 0,
        "staleness": None if feed is None else feed.staleness(),
    }
