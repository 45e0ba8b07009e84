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
from shop_services import TO_EMAIL, TO_PAYMENT, Shop, assert_refused, post

from chit import ServiceKey, attenuate


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


def test_payments_chit_is_refused_by_the_cart_naming_the_check(shop: Shop) -> None:
    assert_refused(post(shop.cart.url + "/checkout", shop.to_payment()), "chit check failed", "operation", "block 1")


def test_emails_chit_is_refused_by_payment_naming_the_check(shop: Shop) -> None:
    assert_refused(
        post(shop.payment.url + "/charges", shop.to_email()), "chit check failed", "email:messages:send", "block 3"
    )


def test_a_chit_that_skipped_the_cart_is_refused_by_payment(shop: Shop) -> None:
    unsigned = attenuate(shop.minted(), operations=TO_PAYMENT, public_keys=shop.root_keys)
    assert_refused(post(shop.payment.url + "/charges", unsigned), "no proof that the request came through cart")


def test_a_block_signed_by_an_unregistered_key_proves_nothing(shop: Shop) -> None:
    forged = ServiceKey("payment", str(biscuit_auth.KeyPair().private_key))
    assert_refused(
        post(shop.email.url + "/messages", shop.to_email(sign_as=forged)),
        "no proof that the request came through payment",
        "(proven: cart)",
    )


def test_a_service_claiming_another_ones_hop_proves_nothing(shop: Shop) -> None:
    cart_as_payment = ServiceKey("payment", shop.keys["cart"].private_key)
    assert_refused(
        post(shop.email.url + "/messages", shop.to_email(sign_as=cart_as_payment)),
        "no proof that the request came through payment",
    )


def test_payment_itself_cannot_claim_the_cart_hop(shop: Shop) -> None:
    payment_as_cart = ServiceKey("cart", shop.keys["payment"].private_key)
    skipped = attenuate(shop.minted(), operations=TO_PAYMENT, sign_as=payment_as_cart, public_keys=shop.root_keys)
    email_chit = attenuate(skipped, operations=TO_EMAIL, sign_as=shop.keys["payment"], public_keys=shop.root_keys)
    assert_refused(post(shop.email.url + "/messages", email_chit), "no proof that the request came through cart")


def test_a_user_token_carries_no_path(shop: Shop) -> None:
    assert_refused(post(shop.email.url + "/messages", shop.token()), "came through cart, payment")
