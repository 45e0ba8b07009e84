"""The chain's email service: sends a receipt only for a chit that provably came through the cart and the
payment service."""

import os

from fastapi import FastAPI, Security

from chit import Principal, Verifier

verifier = Verifier(issuer=os.environ["CHIT_ISSUER"], audience="email")
app = FastAPI(title="email")


@app.post("/messages")
async def send(principal: Principal = Security(verifier, scopes=["email:messages:send"])) -> dict:
    principal.require_path("cart", "payment")
    return {"sent_to": principal.subject, "through": list(principal.through), "kind": principal.kind}
