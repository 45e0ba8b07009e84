"""The email service's own decisions (``examples/shop/email_service.py``): it sends only for a chit that
provably came through the cart and the payment service, and what it receives can touch neither; it follows
the revocation feed."""

from __future__ import annotations

import biscuit_auth
from shop_services import (
    TO_EMAIL,
    TO_PAYMENT,
    Shop,
    assert_challenged,
    assert_not_for_this_service,
    assert_refused,
    post,
    refused_after_revocation,
)

from chit import ServiceKey


def test_the_payment_services_chit_sends_the_receipt(shop: Shop) -> None:
    response = post(shop.email.url + "/messages", shop.to_email("alice"))
    assert response.status_code == 200, response.text
    assert response.json() == {"sent_to": shop.subject("alice"), "through": ["cart", "payment"], "kind": "chit"}


def test_no_token_gets_a_bare_challenge(shop: Shop) -> None:
    assert_challenged(post(shop.email.url + "/messages"))


def test_a_chit_of_a_user_who_gets_no_receipts_is_not_meant_for_email(shop: Shop) -> None:
    assert_not_for_this_service(post(shop.email.url + "/messages", shop.to_email("dave")))


def test_the_chit_it_receives_can_touch_neither_the_cart_nor_payment(shop: Shop) -> None:
    chit = shop.to_email()
    assert_refused(post(shop.cart.url + "/checkout", chit), "chit check failed")
    assert_refused(post(shop.payment.url + "/charges", chit), "chit check failed")


def test_a_chit_narrowed_for_another_service_is_refused(shop: Shop) -> None:
    for_payment = shop.narrowed(shop.minted(), ["payment:charges:create"], shop.keys["cart"])
    chit = shop.narrowed(for_payment, sign_as=shop.keys["payment"])
    assert_refused(post(shop.email.url + "/messages", chit), "chit check failed", "block 1")


def test_a_users_own_token_carries_no_path(shop: Shop) -> None:
    assert_refused(post(shop.email.url + "/messages", shop.token("alice")), "came through cart, payment")


def test_a_chit_that_skipped_payment_is_refused(shop: Shop) -> None:
    assert_refused(
        post(shop.email.url + "/messages", shop.to_payment()),
        "no proof that the request came through payment",
        "(proven: cart)",
    )


def test_a_chit_that_skipped_the_cart_is_refused(shop: Shop) -> None:
    payment_as_cart = ServiceKey("cart", shop.keys["payment"].private_key)
    skipped = shop.narrowed(shop.minted(), TO_PAYMENT, payment_as_cart)
    chit = shop.narrowed(skipped, TO_EMAIL, shop.keys["payment"])
    assert_refused(post(shop.email.url + "/messages", chit), "no proof that the request came through cart")


def test_a_hop_signed_by_a_key_nobody_registered_proves_nothing(shop: Shop) -> None:
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


def test_a_user_logged_out_everywhere_is_refused_within_a_second_or_two(shop: Shop) -> None:
    chit = shop.to_email("erin")
    assert post(shop.email.url + "/messages", chit).status_code == 200
    shop.chit.cli_ok("user", "logout-everywhere", "erin")
    refused_after_revocation(lambda: post(shop.email.url + "/messages", chit))
