"""The cart → payment → email chain of the shop example (``examples/shop``) end to end: a real ``chit
serve`` with the example's manifests, the three services as uvicorn processes configured through their
environment, each holding the service key ``chit service key`` handed over.

alice checks out at the cart with her access token; the cart exchanges it for a chit, narrows it to the
payment and its receipt and signs ``through("cart")``; the payment service checks that it came through the
cart, narrows it to sending email and signs ``through("payment")``; the email service requires the path
cart, payment. Tests that need a chit of the chain in hand build it exactly as the services do, with their
credentials and keys. Each service's own decisions are tested in ``tests/shop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import biscuit_auth
import httpx
import pytest
from helpers import (
    ROOT,
    ChitServer,
    ModuleServers,
    ServiceClient,
    ServiceProcess,
    free_port,
    register_manifest_file,
)
from helpers import user_token as login_token

from chit import ServiceKey, attenuate

SHOP = ROOT / "examples" / "shop"
MODULES = {"cart": "cart", "payment": "payment", "email": "email_service"}  # service id -> its module
BISCUIT = "urn:chit:token-type:biscuit"
PASSWORD = "chain-password-1"
TO_PAYMENT = ["payment:charges:create", "email:messages:send"]
TO_EMAIL = ["email:messages:send"]


@dataclass
class Chain:
    chit: ChitServer
    secrets: dict[str, str]
    keys: dict[str, ServiceKey]
    root_keys: list[str]
    cart: ServiceProcess
    payment: ServiceProcess
    email: ServiceProcess

    def user_token(self) -> str:
        return login_token(self.chit, "alice", PASSWORD)

    def minted(self) -> str:
        """A chit for alice, exchanged by the cart as the cart service does."""
        client = ServiceClient(self.chit, "cart", self.secrets["cart"])
        response = client.exchange(self.user_token(), requested_token_type=BISCUIT)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def to_payment(self, sign_as: ServiceKey | None = None) -> str:
        """The cart's chit for the payment service."""
        key = self.keys["cart"] if sign_as is None else sign_as
        return attenuate(self.minted(), operations=TO_PAYMENT, sign_as=key, public_keys=self.root_keys)

    def to_email(self, sign_as: ServiceKey | None = None) -> str:
        """The payment service's chit for the email service, bound to the one request it sends."""
        key = self.keys["payment"] if sign_as is None else sign_as
        return attenuate(
            self.to_payment(),
            operations=TO_EMAIL,
            method="POST",
            path="/messages",
            sign_as=key,
            public_keys=self.root_keys,
        )


@pytest.fixture(scope="module")
def chain(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    chit = module_server("chit-chain")
    secrets = {name: register_manifest_file(chit, SHOP / f"{name}.toml") for name in MODULES}
    keys = {
        name: ServiceKey(name, chit.cli_ok("service", "key", name, "--json").json()["private_key"]) for name in MODULES
    }
    chit.add_user("alice", PASSWORD, "--role", "cart:shopper", "--role", "payment:payer", "--role", "email:recipient")
    discovery = httpx.get(chit.url + "/.well-known/openid-configuration", timeout=30).json()
    logs = tmp_path_factory.mktemp("chain-services")
    cart, payment, email = (
        ServiceProcess(module, SHOP, free_port(), logs / f"{module}.log") for module in MODULES.values()
    )
    for service, name in ((cart, "cart"), (payment, "payment"), (email, "email")):
        key = keys[name]
        service.env = {
            "CHIT_ISSUER": chit.url,
            f"{name.upper()}_CLIENT_SECRET": secrets[name],
            "CHIT_SERVICE_ID": key.service_id,
            "CHIT_SERVICE_KEY": key.private_key,
        }
    cart.env["PAYMENT_URL"] = payment.url
    payment.env["EMAIL_URL"] = email.url
    try:
        with ThreadPoolExecutor(3) as pool:  # side by side: each waits only for its own start
            for started in [pool.submit(service.start) for service in (cart, payment, email)]:
                started.result()
        yield Chain(chit, secrets, keys, discovery["biscuit_public_keys"], cart, payment, email)
    finally:
        for service in (cart, payment, email):
            service.stop()


def post(url: str, token: str) -> httpx.Response:
    return httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def assert_refused(response: httpx.Response, *fragments: str) -> None:
    assert response.status_code == 403, response.text
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, detail


def test_the_chain_succeeds_and_email_knows_it_came_through_cart_and_payment(chain: Chain) -> None:
    response = post(chain.cart.url + "/checkout", chain.user_token())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["order"] == "placed"
    assert body["payment"]["through"] == ["cart"]
    receipt = body["payment"]["receipt"]
    assert receipt["through"] == ["cart", "payment"]
    assert receipt["kind"] == "chit"
    assert receipt["sent_to"] == body["for"] == body["payment"]["charged"]


def test_the_chits_of_the_chain_carry_one_signed_block_per_hop(chain: Chain) -> None:
    token = biscuit_auth.Biscuit.from_base64(chain.to_email(), biscuit_auth.PublicKey(chain.root_keys[0]))
    signers = [token.block_external_key(i) for i in range(token.block_count())]
    assert [str(s) if s is not None else None for s in signers] == [
        None,
        None,
        chain.keys["cart"].public_key,
        None,
        chain.keys["payment"].public_key,
    ]


def test_payments_chit_is_refused_by_the_cart_naming_the_check(chain: Chain) -> None:
    assert_refused(post(chain.cart.url + "/checkout", chain.to_payment()), "chit check failed", "operation", "block 1")


def test_emails_chit_is_refused_by_payment_naming_the_check(chain: Chain) -> None:
    assert_refused(
        post(chain.payment.url + "/charges", chain.to_email()), "chit check failed", "email:messages:send", "block 3"
    )


def test_a_chit_that_skipped_the_cart_is_refused_by_payment(chain: Chain) -> None:
    unsigned = attenuate(chain.minted(), operations=TO_PAYMENT, public_keys=chain.root_keys)
    assert_refused(post(chain.payment.url + "/charges", unsigned), "no proof that the request came through cart")


def test_a_block_signed_by_an_unregistered_key_proves_nothing(chain: Chain) -> None:
    forged = ServiceKey("payment", str(biscuit_auth.KeyPair().private_key))
    assert_refused(
        post(chain.email.url + "/messages", chain.to_email(sign_as=forged)),
        "no proof that the request came through payment",
        "(proven: cart)",
    )


def test_a_service_claiming_another_ones_hop_proves_nothing(chain: Chain) -> None:
    cart_as_payment = ServiceKey("payment", chain.keys["cart"].private_key)
    assert_refused(
        post(chain.email.url + "/messages", chain.to_email(sign_as=cart_as_payment)),
        "no proof that the request came through payment",
    )


def test_payment_itself_cannot_claim_the_cart_hop(chain: Chain) -> None:
    payment_as_cart = ServiceKey("cart", chain.keys["payment"].private_key)
    skipped = attenuate(chain.minted(), operations=TO_PAYMENT, sign_as=payment_as_cart, public_keys=chain.root_keys)
    email_chit = attenuate(skipped, operations=TO_EMAIL, sign_as=chain.keys["payment"], public_keys=chain.root_keys)
    assert_refused(post(chain.email.url + "/messages", email_chit), "no proof that the request came through cart")


def test_a_user_token_carries_no_path(chain: Chain) -> None:
    assert_refused(post(chain.email.url + "/messages", chain.user_token()), "came through cart, payment")
