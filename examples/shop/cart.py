"""The shop example's cart: checks out for the user and pays through the payment service with a chit, a
Biscuit token the cart narrows offline to the payment and its receipt, so that what the payment service
receives cannot check out again; the cart signs it with its own key, so that the services further on can
tell that the request came through the cart."""

import os
import uuid
from dataclasses import asdict, dataclass

import httpx
from fastapi import FastAPI, HTTPException, Security

from chit import Principal, ServiceIdentity, ServiceKey, Verifier, attenuate

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
PAYMENT_URL = os.environ.get("PAYMENT_URL", "http://127.0.0.1:8712")
BISCUIT = "urn:chit:token-type:biscuit"  # asks the token exchange for a chit rather than a JWT
HANDED_ON = ["payment:charges:create", "email:messages:send"]  # the payment and its receipt, none of the cart's

identity = ServiceIdentity.from_env("cart", issuer=ISSUER)  # CART_CLIENT_SECRET; unset, it exits saying how
service_key = ServiceKey.from_env("cart")  # CHIT_SERVICE_KEY from `chit service key cart`; unset, it exits
# follows the revocation feed; at startup, checks that the auth server publishes this service key
verifier = Verifier(issuer=ISSUER, audience="cart", identity=identity, service_key=service_key)
app = FastAPI(title="cart", lifespan=verifier.lifespan)  # the revocation list is loaded before traffic


@dataclass
class Order:
    id: str
    customer: str  # the user's subject id: orders have owners
    payment: dict


ORDERS: list[Order] = []


@app.get("/orders")
async def list_orders(principal: Principal = Security(verifier, scopes=["cart:orders:read"])) -> list[dict]:
    return [asdict(order) for order in ORDERS if order.customer == principal.subject]


@app.post("/checkout")
async def checkout(principal: Principal = Security(verifier, scopes=["cart:orders:create"])) -> dict:
    # the user's token is a JWT, which is never forwarded: the auth server mints a chit for her instead
    chit = (await identity.exchange(principal.token, requested_token_type=BISCUIT)).access_token
    await verifier.verify(chit)  # as minted; it also fetches the root keys that attenuate checks the chit with
    to_payment = attenuate(chit, operations=HANDED_ON, sign_as=service_key)  # not bound to /charges: it goes on
    async with httpx.AsyncClient(base_url=PAYMENT_URL, timeout=30) as payment:
        charged = await payment.post("/charges", headers={"Authorization": f"Bearer {to_payment}"})
    if charged.is_error:  # her token is fine, the payment was not: a 403 saying why, or a 502 if payment failed
        status = 502 if charged.status_code >= 500 else 403
        raise HTTPException(status, f"payment refused: {charged.json().get('detail', charged.status_code)}")
    order = Order(f"ord_{uuid.uuid4().hex[:12]}", principal.subject, charged.json())
    ORDERS.append(order)
    return {"order": "placed", "id": order.id, "for": principal.subject, "payment": order.payment}
