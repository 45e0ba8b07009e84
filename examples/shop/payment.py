"""The shop example's payment service: charges only for a chit that came through the cart, then has the
email service send the receipt with the chit narrowed to sending that one email, so that the email service
cannot charge again; it signs the chit with its own key, adding itself to the proof of the path."""

import os

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import ChitForwarder, Principal, ServiceIdentity, ServiceKey, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
EMAIL_URL = os.environ.get("EMAIL_URL", "http://127.0.0.1:8713")

identity = ServiceIdentity.from_env("payment", issuer=ISSUER)  # PAYMENT_CLIENT_SECRET; unset, it exits saying how
service_key = ServiceKey.from_env("payment")  # CHIT_SERVICE_KEY from `chit service key payment`
# follows the revocation feed; at startup, checks that the auth server publishes this service key
verifier = Verifier(issuer=ISSUER, audience="payment", identity=identity, service_key=service_key)
# bound to the one request it sends
to_email = ChitForwarder(operations=["email:messages:send"], bind_request=True, service_key=service_key)
app = FastAPI(title="payment", lifespan=verifier.lifespan)  # the revocation list is loaded before traffic


@app.post("/charges")
async def charge(principal: Principal = Security(verifier, scopes=["payment:charges:create"])) -> dict:
    principal.require_path("cart")  # a 403 unless the cart's key signed the chit: nobody pays around the cart
    async with httpx.AsyncClient(base_url=EMAIL_URL, auth=to_email, timeout=30) as email:
        sent = await email.post("/messages")
    if sent.is_error:  # the chit was fine here, the receipt was not: a 403 saying why, or a 502 if email failed
        status = 502 if sent.status_code >= 500 else 403
        raise HTTPException(status, f"email refused: {sent.json().get('detail', sent.status_code)}")
    return {"charged": principal.subject, "through": list(principal.through), "receipt": sent.json()}
