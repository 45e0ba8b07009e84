"""What the SDK sends out stays where the issuer is: its service identity talks https only (plain http on
loopback hosts), and no request of the SDK follows a redirect, even on a client of the application's that
follows them. Otherwise keys served by another host would be installed and the tokens they sign accepted,
and the client secret or a user's token would be posted to another origin. The issuer is the test kit's
in-process one; the redirects are what a misrouted proxy or an open redirect on the issuer's host would send.
"""

from __future__ import annotations

import biscuit_auth
import httpx
import pytest

from chit import ServiceIdentity
from chit.errors import ChitError
from chit.sdk.context import RequestAuth
from chit.sdk.fetch import REFUSED_RENEW_PAUSE
from chit.sdk.jwks_client import ServiceKeysClient
from chit.testing import Clock, TestIssuer

pytestmark = pytest.mark.anyio
ISSUER = "https://issuer.chit.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "options",
    [{"issuer": "http://auth.internal.example:8700"}, {"token_url": "http://auth.internal.example:8700/oauth2/token"}],
)
def test_a_service_identity_refuses_plain_http_off_loopback(options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="must be https"):
        ServiceIdentity("cart", "cart-secret", **options)


def test_a_service_identity_on_loopback_may_use_plain_http() -> None:
    assert ServiceIdentity("cart", "cart-secret", issuer="http://127.0.0.1:8700").issuer == "http://127.0.0.1:8700"


def test_from_env_stops_on_a_plain_http_issuer_off_loopback() -> None:
    environ = {"CART_CLIENT_SECRET": "cart-secret", "CHIT_ISSUER": "http://auth.internal.example:8700"}
    with pytest.raises(SystemExit) as stopped:
        ServiceIdentity.from_env("cart", environ=environ)
    assert "CHIT_ISSUER" in str(stopped.value.code)  # the message uvicorn prints, exit status 1
    assert "must be https" in str(stopped.value.code)


async def test_keys_behind_a_redirect_are_never_fetched() -> None:
    clock = Clock()
    real, attacker = TestIssuer(ISSUER, clock=clock), TestIssuer(ISSUER, clock=clock)
    fetched: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        if request.url.host == "evil.example":
            return httpx.Response(200, json=attacker.jwks())
        if "jwks" in request.url.path:
            return httpx.Response(302, headers={"Location": "http://evil.example/keys"})
        return real.handle(request)

    following = httpx.AsyncClient(transport=httpx.MockTransport(handle), follow_redirects=True)
    verifier = real.verifier("image-store", http_client=following)
    with pytest.raises(ChitError):
        await verifier.verify(attacker.token("usr_admin", ["image-store:images:delete"]))
    assert not [url for url in fetched if "evil.example" in url]


async def test_the_token_endpoint_s_redirect_takes_no_secret_and_no_user_token_elsewhere() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(307, headers={"Location": "http://evil.example/collect"})

    following = httpx.AsyncClient(transport=httpx.MockTransport(handle), follow_redirects=True)
    token_url = ISSUER + "/oauth2/token"
    post = ServiceIdentity(
        "cart", "TOP-SECRET", token_url=token_url, http_client=following, auth_method="client_secret_post"
    )
    with pytest.raises(ChitError):
        await post.token()
    basic = ServiceIdentity("cart", "TOP-SECRET", token_url=token_url, http_client=following)
    with pytest.raises(ChitError):
        await basic.exchange("USER-ACCESS-TOKEN", audience="payment")
    assert [request.url.host for request in seen] == ["issuer.chit.test", "issuer.chit.test"]


def test_the_request_context_does_not_print_its_token() -> None:
    assert "a-bearer-token" not in repr(RequestAuth(None, "a-bearer-token"))  # type: ignore[arg-type]


def refusing(request: httpx.Request) -> httpx.Response:
    """A called service that refuses every token as invalid."""
    return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def test_a_service_refusing_every_token_gets_a_renewal_once_a_pause_not_every_call() -> None:
    clock = Clock()
    issuer = TestIssuer(clock=clock)
    issuer.add_client("cart", "cart-secret", ["payment:charges:create"])
    identity = issuer.identity("cart", "cart-secret")
    user = issuer.token("usr_a", ["shop:carts:read", "payment:charges:create"])
    issuer.add_client("shop", "shop-secret", [], on_behalf=["payment:charges:create"])
    shop = issuer.identity("shop", "shop-secret")
    async with httpx.AsyncClient(transport=httpx.MockTransport(refusing)) as payment:
        for _ in range(50):
            await payment.get("https://payment.internal/charges", auth=identity)
            await payment.get("https://payment.internal/charges", auth=shop.for_user("payment", token=user))
        assert issuer.requests.count("/oauth2/token") == 4  # each: its token, and one renewal when first refused
        clock.advance(REFUSED_RENEW_PAUSE)
        await payment.get("https://payment.internal/charges", auth=identity)
        await payment.get("https://payment.internal/charges", auth=shop.for_user("payment", token=user))
        assert issuer.requests.count("/oauth2/token") == 6  # a pause later, one renewal each again


async def test_a_service_key_banned_names_no_service_any_more() -> None:
    """What the verifier does with a service key the feed revokes (a ``key`` event naming ``ed25519/<hex>``): the
    keys client bans it, and names no service for it, so a through() block it signed proves nothing."""
    key = str(biscuit_auth.KeyPair().public_key)

    def published(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [{"service": "cart", "public_key": key}]})

    keys = ServiceKeysClient(
        ISSUER,
        service_keys_uri=ISSUER + "/.well-known/chit-service-keys",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(published)),
        clock=Clock(),
    )
    await keys.refresh()
    assert keys.services_of(key) == {"cart"}
    keys.ban(key)
    assert keys.services_of(key) == frozenset()
