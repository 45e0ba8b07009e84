"""The cart's own decisions (``examples/shop/cart.py``): who may check out and see which orders, and that
what it hands the payment service is a chit narrowed to the payment and its receipt, which the cart itself
refuses."""

from __future__ import annotations

import httpx
from helpers import ServiceClient
from shop_services import Shop, assert_challenged, assert_refused, bearer, post, refused_after_revocation


def test_a_shopper_checks_out_and_pays_through_payment_and_email(shop: Shop) -> None:
    response = post(shop.cart.url + "/checkout", shop.token("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["order"], body["for"]) == ("placed", shop.subject("alice"))
    assert body["payment"]["charged"] == body["for"]
    assert body["payment"]["through"] == ["cart"]
    assert body["payment"]["receipt"]["through"] == ["cart", "payment"]


def test_each_user_sees_only_their_own_orders(shop: Shop) -> None:
    placed = post(shop.cart.url + "/checkout", shop.token("alice"))
    assert placed.status_code == 200, placed.text
    alices = httpx.get(shop.cart.url + "/orders", headers=bearer(shop.token("alice")), timeout=30)
    assert placed.json()["id"] in [order["id"] for order in alices.json()]
    assert {order["customer"] for order in alices.json()} == {shop.subject("alice")}
    bobs = httpx.get(shop.cart.url + "/orders", headers=bearer(shop.token("bob")), timeout=30)
    assert (bobs.status_code, bobs.json()) == (200, [])


def test_no_token_gets_a_bare_challenge(shop: Shop) -> None:
    assert_challenged(post(shop.cart.url + "/checkout"))
    assert_challenged(httpx.get(shop.cart.url + "/orders", timeout=30))


def test_a_user_who_may_not_check_out_is_refused(shop: Shop) -> None:
    assert_refused(post(shop.cart.url + "/checkout", shop.token("bob")), "cart:orders:create")


def test_a_shopper_who_may_not_pay_is_refused_by_the_payment_service(shop: Shop) -> None:
    # the cart cannot hand on what the user does not hold, and says which hop refused
    response = post(shop.cart.url + "/checkout", shop.token("carol"))
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == "payment refused: token is not meant for this audience"
    carols = httpx.get(shop.cart.url + "/orders", headers=bearer(shop.token("carol")), timeout=30)
    assert carols.json() == []  # no order without its payment


def test_the_chit_the_cart_hands_to_payment_cannot_check_out_again(shop: Shop) -> None:
    assert_refused(post(shop.cart.url + "/checkout", shop.to_payment()), "chit check failed", "operation", "block 1")


def test_a_chit_narrowed_for_another_service_is_refused(shop: Shop) -> None:
    for_email = shop.narrowed(shop.minted(), ["email:messages:send"])
    assert_refused(post(shop.cart.url + "/checkout", for_email), "chit check failed", "block 1")
    assert_refused(post(shop.cart.url + "/checkout", shop.to_email()), "chit check failed")


def test_a_revoked_token_is_refused_within_a_second_or_two(shop: Shop) -> None:
    token = shop.token("alice")
    orders = httpx.get(shop.cart.url + "/orders", headers=bearer(token), timeout=30)
    assert orders.status_code == 200, orders.text
    assert ServiceClient(shop.chit, "chit-cli").revoke(token).status_code == 200
    refused_after_revocation(lambda: httpx.get(shop.cart.url + "/orders", headers=bearer(token), timeout=30))
