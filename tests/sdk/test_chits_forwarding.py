"""The seed's chain, cart → payment → email, as three in-process FastAPI services: each hands on the chit it
received through ``ChitForwarder``, attenuated for the next hop, offline. What payment received is refused by
cart; what email received is refused by payment; each refusal names the failing check."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Security

from chit import ChitForwarder, Principal, attenuate
from chit.core.chit_authorizer import parse_for_attenuation, parse_root_keys
from chit.sdk import ServiceIdentity, authenticated
from chit.testing import TestIssuer, make_principal

pytestmark = pytest.mark.anyio
CHECKOUT = "cart:carts:checkout"
CHARGE = "payment:charges:create"
SEND = "email:messages:send"
PAYMENT, EMAIL = "http://payment.test", "http://email.test"


class Chain:
    """The three services, and the chit each one received last."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer
        self.received: dict[str, str] = {}
        self.email = self.service("email", [SEND], call=None)
        self.payment = self.service("payment", [CHARGE], call=(EMAIL, self.email, ChitForwarder(operations=[SEND])))
        self.cart = self.service(
            "cart", [CHECKOUT], call=(PAYMENT, self.payment, ChitForwarder(operations=[CHARGE, SEND]))
        )

    def service(self, name: str, scopes: list[str], call: tuple[str, FastAPI, httpx.Auth] | None) -> FastAPI:
        verifier = self.issuer.verifier(name)
        app = FastAPI()

        @app.post("/work")
        async def work(principal: Principal = Security(verifier, scopes=scopes)) -> dict[str, Any]:
            self.received[name] = principal.token
            answer: dict[str, Any] = {"service": name, "kind": principal.kind}
            if call is not None:
                url, downstream, auth = call
                # the three lines of service code: a client with ChitForwarder, and the call
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=downstream), auth=auth) as client:
                    response = await client.post(url + "/work")
                answer["downstream"] = response.json()
            return answer

        return app


@pytest.fixture
def chain(issuer: TestIssuer) -> Chain:
    return Chain(issuer)


async def post(app: FastAPI, token: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post("/work", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def user_chit(issuer: TestIssuer) -> str:
    return issuer.chit("usr_alice", [CHECKOUT, CHARGE, SEND], client_id="shop-web")


async def test_the_chit_narrows_at_every_hop(chain: Chain, user_chit: str) -> None:
    response = await post(chain.cart, user_chit)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "service": "cart",
        "kind": "chit",
        "downstream": {"service": "payment", "kind": "chit", "downstream": {"service": "email", "kind": "chit"}},
    }
    assert chain.received["cart"] == user_chit
    assert chain.received["payment"].startswith(user_chit[:40])  # the same authority block
    assert chain.received["payment"] != user_chit


async def test_what_payment_received_is_refused_by_cart(chain: Chain, user_chit: str) -> None:
    await post(chain.cart, user_chit)
    response = await post(chain.cart, chain.received["payment"])
    assert response.status_code == 403
    assert response.json()["detail"] == (
        'chit check failed: check all operation($op), {"email:messages:send", "payment:charges:create"}'
        ".contains($op) (block 1)"
    )


async def test_what_email_received_is_refused_by_payment_and_cart(chain: Chain, user_chit: str) -> None:
    await post(chain.cart, user_chit)
    email_chit = chain.received["email"]
    for app in (chain.payment, chain.cart):
        response = await post(app, email_chit)
        assert response.status_code == 403
        assert response.json()["detail"].startswith("chit check failed: check all operation($op)")
    assert (await post(chain.email, email_chit)).status_code == 200


async def test_the_forwarder_refuses_to_forward_a_jwt_without_a_fallback(issuer: TestIssuer, chain: Chain) -> None:
    jwt = issuer.token("usr_alice", [CHECKOUT, CHARGE, SEND])
    with pytest.raises(RuntimeError, match="no request chit"):
        await post(chain.cart, jwt)


def test_the_forwarder_attenuates_and_sends_synchronously_with_the_request_bound(issuer: TestIssuer) -> None:
    chit = issuer.chit("usr_alice", [CHARGE, SEND])
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
    forwarder = ChitForwarder(operations=[SEND], bind_request=True, public_keys=[issuer.root_key.public_key])
    # a request's token bound by hand (a background job, another framework): the forwarder reads the context
    principal = make_principal("usr_alice", [CHARGE, SEND])
    with authenticated(principal, chit), httpx.Client(transport=transport, auth=forwarder) as client:
        client.post("https://email.test/messages")
    token = sent[0].headers["authorization"].removeprefix("Bearer ")
    assert token != chit
    blocks = _sources(issuer, token)
    assert blocks[1] == (
        'check all operation($op), {"email:messages:send"}.contains($op);\n'
        'check if service("email");\n'
        'check if method("POST");\n'
        'check if path("/messages");\n'
    )


def test_outside_a_request_the_fallback_authenticates(issuer: TestIssuer) -> None:
    issuer.add_client("payment", "s3cret", [SEND])
    identity = ServiceIdentity("payment", "s3cret", issuer=issuer.issuer, sync_http_client=issuer.sync_http_client())
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
    with httpx.Client(transport=transport, auth=ChitForwarder(operations=[SEND], fallback=identity)) as client:
        client.post("https://email.test/messages")
    assert sent[0].headers["authorization"].startswith("Bearer ey")  # the service's own JWT


def test_a_forwarder_must_restrict_something() -> None:
    with pytest.raises(ValueError, match="must restrict something"):
        ChitForwarder()


def test_attenuate_needs_a_known_root_key(issuer: TestIssuer) -> None:
    chit = issuer.chit("usr_alice", [SEND])
    other = TestIssuer("https://other.chit.test")
    with pytest.raises(ValueError, match="no root key known here verifies it"):
        attenuate(chit, operations=[SEND], public_keys=[other.root_key.public_key])
    assert attenuate(chit, operations=[SEND], public_keys={issuer.root_key.id: issuer.root_key.public_key})
    with pytest.raises(ValueError, match="only a chit"):
        attenuate(issuer.token("usr_alice", [SEND]), operations=[SEND])
    with pytest.raises(ValueError, match="nothing to restrict"):
        attenuate(chit, public_keys=[issuer.root_key.public_key])
    with pytest.raises(ValueError, match="ttl"):
        attenuate(chit, ttl=0, public_keys=[issuer.root_key.public_key])


def test_attenuation_refuses_a_result_a_verifier_would_refuse(issuer: TestIssuer) -> None:
    chit = issuer.chit("usr_alice", [SEND])
    keys = [issuer.root_key.public_key]
    for _ in range(15):
        chit = attenuate(chit, service="email", public_keys=keys)
    with pytest.raises(ValueError, match="more than 16 blocks"):
        attenuate(chit, service="email", public_keys=keys)


def _sources(issuer: TestIssuer, token: str) -> list[str]:
    biscuit = parse_for_attenuation(token, parse_root_keys(issuer.discovery()).candidates)
    return [biscuit.block_source(i) for i in range(biscuit.block_count())]
