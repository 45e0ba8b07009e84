"""The shop example's email service: sends a receipt only for a chit that provably came through the cart
and the payment service, each hop signed with that service's own key. (Not ``email.py``: that name would
shadow the standard library's ``email`` package.)"""

import os

from fastapi import FastAPI, Security

from chit import Principal, ServiceIdentity, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")

identity = ServiceIdentity.from_env("email", issuer=ISSUER)  # EMAIL_CLIENT_SECRET; unset, it exits saying how
verifier = Verifier(issuer=ISSUER, audience="email", identity=identity)  # follows the revocation feed
app = FastAPI(title="email", lifespan=verifier.lifespan)  # the revocation list is loaded before traffic


@app.post("/messages")
async def send(principal: Principal = Security(verifier, scopes=["email:messages:send"])) -> dict:
    principal.require_path("cart", "payment")  # a user's own token, or a chit that skipped a hop, is refused
    return {"sent_to": principal.subject, "through": list(principal.through), "kind": principal.kind}
