"""The payment service's own decisions (``examples/shop/payment.py``): it charges only for a chit that
came through the cart and may pay, and what it hands the email service can only send that email."""

from __future__ import annotations

import biscuit_auth
from helpers import ServiceClient
from shop_services import (
    TO_PAYMENT,
    Shop,
    assert_challenged,
    assert_not_for_this_service,
    assert_refused,
    post,
    refused_after_revocation,
)

from chit import ServiceKey


def test_the_carts_chit_is_charged_and_the_receipt_sent(shop: Shop) -> None:
    response = post(shop.payment.url + "/charges", shop.to_payment("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["charged"] == shop.subject("alice")
    assert body["through"] == ["cart"]
    assert body["receipt"] == {"sent_to": body["charged"], "through": ["cart", "payment"], "kind": "chit"}


def test_no_token_gets_a_bare_challenge(shop: Shop) -> None:
    assert_challenged(post(shop.payment.url + "/charges"))


def test_a_chit_of_a_user_who_may_not_pay_is_not_meant_for_payment(shop: Shop) -> None:
    assert_not_for_this_service(post(shop.payment.url + "/charges", shop.to_payment("carol")))


def test_the_chit_narrowed_for_email_cannot_pay(shop: Shop) -> None:
    assert_refused(
        post(shop.payment.url + "/charges", shop.to_email()), "chit check failed", "email:messages:send", "block 3"
    )


def test_a_users_own_token_did_not_come_through_the_cart(shop: Shop) -> None:
    assert_refused(post(shop.payment.url + "/charges", shop.token("alice")), "came through cart")


def test_a_chit_that_skipped_the_cart_is_refused(shop: Shop) -> None:
    unsigned = shop.narrowed(shop.minted(), TO_PAYMENT)
    assert_refused(post(shop.payment.url + "/charges", unsigned), "no proof that the request came through cart")


def test_another_service_signing_as_the_cart_proves_nothing(shop: Shop) -> None:
    for forged in (
        ServiceKey("cart", shop.keys["payment"].private_key),  # payment claiming the cart's hop
        ServiceKey("cart", str(biscuit_auth.KeyPair().private_key)),  # a key nobody registered
    ):
        chit = shop.to_payment(sign_as=forged)
        assert_refused(post(shop.payment.url + "/charges", chit), "no proof that the request came through cart")


def test_a_chit_revoked_at_its_root_is_refused_within_a_second_or_two(shop: Shop) -> None:
    minted = shop.minted()
    to_payment = shop.narrowed(minted, TO_PAYMENT, shop.keys["cart"])
    assert post(shop.payment.url + "/charges", to_payment).status_code == 200
    # the cart's client revokes the chit it was minted; every chit attenuated from it goes with it
    assert ServiceClient(shop.chit, "cart", shop.secrets["cart"]).revoke(minted).status_code == 200
    refused_after_revocation(lambda: post(shop.payment.url + "/charges", to_payment))
