"""The chain's cart service: checks out for the user, paying through the payment service with a chit it
narrowed to the payment and its receipt, signed with its own service key."""

import os

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import Principal, ServiceIdentity, ServiceKey, Verifier, attenuate

ISSUER = os.environ["CHIT_ISSUER"]
PAYMENT_URL = os.environ["PAYMENT_URL"]
BISCUIT = "urn:chit:token-type:biscuit"
HANDED_ON = ["payment:charges:create", "email:messages:send"]

verifier = Verifier(issuer=ISSUER, audience="cart")
identity = ServiceIdentity("cart", os.environ["CART_CLIENT_SECRET"], issuer=ISSUER)
service_key = ServiceKey.from_env()
app = FastAPI(title="cart")


@app.post("/checkout")
async def checkout(principal: Principal = Security(verifier, scopes=["cart:orders:create"])) -> dict:
    chit = (await identity.exchange(principal.token, requested_token_type=BISCUIT)).access_token
    await verifier.verify(chit)  # the chit for the user, as the auth server minted it
    to_payment = attenuate(chit, operations=HANDED_ON, sign_as=service_key)
    async with httpx.AsyncClient(base_url=PAYMENT_URL, timeout=30) as payment:
        charged = await payment.post("/charges", headers={"Authorization": f"Bearer {to_payment}"})
    if charged.is_error:
        raise HTTPException(charged.status_code, charged.json()["detail"])
    return {"order": "placed", "for": principal.subject, "payment": charged.json()}
