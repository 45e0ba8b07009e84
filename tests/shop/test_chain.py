"""The cart → payment → email chain of the shop example (``examples/shop``) end to end: the shop running
(``shop_services.running_shop``), shared with the tests of each service.

alice checks out at the cart with her access token; the cart exchanges it for a chit, narrows it to the
payment and its receipt and signs ``through("cart")``; the payment service checks that it came through the
cart, narrows it to sending email and signs ``through("payment")``; the email service requires the path
cart, payment. Tests that need a chit of the chain in hand build it exactly as the services do, with their
credentials and keys. Each service's own decisions are tested beside this module.
"""

from __future__ import annotations

import biscuit_auth
from shop_services import Shop, post


def test_the_chain_succeeds_and_email_knows_it_came_through_cart_and_payment(shop: Shop) -> None:
    response = post(shop.cart.url + "/checkout", shop.token())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["order"] == "placed"
    assert body["payment"]["through"] == ["cart"]
    receipt = body["payment"]["receipt"]
    assert receipt["through"] == ["cart", "payment"]
    assert receipt["kind"] == "chit"
    assert receipt["sent_to"] == body["for"] == body["payment"]["charged"]


def test_the_chits_of_the_chain_carry_one_signed_block_per_hop(shop: Shop) -> None:
    token = biscuit_auth.Biscuit.from_base64(shop.to_email(), biscuit_auth.PublicKey(shop.root_keys[0]))
    signers = [token.block_external_key(i) for i in range(token.block_count())]
    assert [str(s) if s is not None else None for s in signers] == [
        None,
        None,
        shop.keys["cart"].public_key,
        None,
        shop.keys["payment"].public_key,
    ]
