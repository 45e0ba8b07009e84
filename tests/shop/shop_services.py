"""The shop example (``examples/shop``) running for its tests (``running_shop``): a real ``chit serve``
with the example's manifests, and the cart, the payment and the email service as uvicorn processes
configured through their environment as a deployment would, each holding the service key that ``chit
service key`` handed over.

The users: alice may check out, pay and get the receipt; bob may see his orders, pay and get a receipt but
not check out; carol may check out but not pay; dave may check out and pay but gets no receipt; erin is
alice's twin, for the test that logs her out everywhere. Tests that need a chit of the chain in hand
build it exactly as the services do, with their credentials and keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from helpers import (
    ROOT,
    ChitServer,
    ModuleServers,
    ServiceClient,
    ServiceProcess,
    claims_of,
    free_port,
    register_manifest_file,
    user_token,
)

from chit import ServiceKey, attenuate

SHOP = ROOT / "examples" / "shop"
MODULES = {"cart": "cart", "payment": "payment", "email": "email_service"}  # service id -> its module
BISCUIT = "urn:chit:token-type:biscuit"
PASSWORD = "shop-password-1"
ROLES = {
    "alice": ["cart:shopper", "payment:payer", "email:recipient"],
    "bob": ["cart:viewer", "payment:payer", "email:recipient"],
    "carol": ["cart:shopper"],
    "dave": ["cart:shopper", "payment:payer"],
    "erin": ["cart:shopper", "payment:payer", "email:recipient"],
}
TO_PAYMENT = ["payment:charges:create", "email:messages:send"]  # what the cart hands on
TO_EMAIL = ["email:messages:send"]  # what the payment service hands on


@dataclass
class Shop:
    """The auth server, the services' secrets and keys, the root keys chits are signed with, and the
    running services."""

    chit: ChitServer
    secrets: dict[str, str]
    keys: dict[str, ServiceKey]
    root_keys: list[str]
    cart: ServiceProcess
    payment: ServiceProcess
    email: ServiceProcess

    def token(self, username: str = "alice") -> str:
        """The user's own access token, as she logs in."""
        return user_token(self.chit, username, PASSWORD)

    def minted(self, username: str = "alice") -> str:
        """A chit for the user, exchanged by the cart as the cart does at checkout."""
        client = ServiceClient(self.chit, "cart", self.secrets["cart"])
        response = client.exchange(self.token(username), requested_token_type=BISCUIT)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def narrowed(self, chit: str, operations: list[str] | None = None, sign_as: ServiceKey | None = None) -> str:
        """``chit`` narrowed to ``operations`` and signed with ``sign_as``, checked with the auth server's keys."""
        return attenuate(chit, operations=operations, sign_as=sign_as, public_keys=self.root_keys)

    def to_payment(self, username: str = "alice", sign_as: ServiceKey | None = None) -> str:
        """The cart's chit for the payment service."""
        return self.narrowed(self.minted(username), TO_PAYMENT, self.keys["cart"] if sign_as is None else sign_as)

    def to_email(self, username: str = "alice", sign_as: ServiceKey | None = None) -> str:
        """The payment service's chit for the email service, bound to the one request it sends."""
        key = self.keys["payment"] if sign_as is None else sign_as
        return attenuate(
            self.to_payment(username),
            operations=TO_EMAIL,
            method="POST",
            path="/messages",
            sign_as=key,
            public_keys=self.root_keys,
        )

    def subject(self, username: str) -> str:
        """The user's id, as the services name her."""
        sub: str = claims_of(self.token(username))["sub"]
        return sub


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(url: str, token: str | None = None) -> httpx.Response:
    """A POST with the token, or with no credentials at all."""
    return httpx.post(url, headers={} if token is None else bearer(token), timeout=30)


def assert_refused(response: httpx.Response, *fragments: str) -> None:
    """A 403 with the challenge for a token that is valid but may not do this, its detail naming the check."""
    assert response.status_code == 403, response.text
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, detail


def assert_not_for_this_service(response: httpx.Response) -> None:
    """A token that carries none of the service's permissions is not meant for it: a 401, not a 403."""
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["detail"] == "token is not meant for this audience"


def assert_challenged(response: httpx.Response) -> None:
    """No token: a 401 with a bare challenge, telling a client nothing but the scheme."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def refused_after_revocation(request: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer to ``request`` once the service has heard of a revocation from the feed, which takes it
    about a second: a 401 for a token that is no longer valid."""
    deadline = time.monotonic() + 5
    while (response := request()).status_code == 200:
        assert time.monotonic() < deadline, "the service still accepts the revoked token after 5 s"
        time.sleep(0.1)
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    return response


@contextmanager
def running_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The auth server and the three services started, with the users and their roles; all stopped after."""
    servers = ModuleServers(tmp_path_factory)
    services: list[ServiceProcess] = []
    try:
        chit = servers("shop")
        secrets = {name: register_manifest_file(chit, SHOP / f"{name}.toml") for name in MODULES}
        keys = {
            name: ServiceKey(name, chit.cli_ok("service", "key", name, "--json").json()["private_key"])
            for name in MODULES
        }
        for username, roles in ROLES.items():
            chit.add_user(username, PASSWORD, *(arg for role in roles for arg in ("--role", role)))
        discovery = httpx.get(chit.url + "/.well-known/openid-configuration", timeout=30).json()
        logs = tmp_path_factory.mktemp("shop-services")
        services = [ServiceProcess(module, SHOP, free_port(), logs / f"{module}.log") for module in MODULES.values()]
        cart, payment, email = services
        for service, name in zip(services, MODULES, strict=True):
            service.env = {
                "CHIT_ISSUER": chit.url,
                f"{name.upper()}_CLIENT_SECRET": secrets[name],
                "CHIT_SERVICE_ID": name,
                "CHIT_SERVICE_KEY": keys[name].private_key,
            }
        cart.env["PAYMENT_URL"] = payment.url
        payment.env["EMAIL_URL"] = email.url
        with ThreadPoolExecutor(len(services)) as pool:
            for started in [pool.submit(service.start) for service in services]:
                started.result()
        yield Shop(chit, secrets, keys, discovery["biscuit_public_keys"], cart, payment, email)
    finally:
        for service in services:
            service.stop()
        servers.stop()
