"""The chain's payment service: charges for a chit that came through the cart, then has the email service
send the receipt with the chit narrowed to sending email and signed with its own service key."""

import os

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import ChitForwarder, Principal, ServiceKey, Verifier

ISSUER = os.environ["CHIT_ISSUER"]
EMAIL_URL = os.environ["EMAIL_URL"]

verifier = Verifier(issuer=ISSUER, audience="payment")
to_email = ChitForwarder(operations=["email:messages:send"], service_key=ServiceKey.from_env())
app = FastAPI(title="payment")


@app.post("/charges")
async def charge(principal: Principal = Security(verifier, scopes=["payment:charges:create"])) -> dict:
    principal.require_path("cart")
    async with httpx.AsyncClient(base_url=EMAIL_URL, auth=to_email, timeout=30) as email:
        sent = await email.post("/messages")
    if sent.is_error:
        raise HTTPException(sent.status_code, sent.json()["detail"])
    return {"charged": principal.subject, "through": list(principal.through), "receipt": sent.json()}
