"""A service's settings from its environment: ``ServiceIdentity.from_env``, ``ServiceKey.from_env`` and the
messages that name the fix (``chit.sdk.settings``)."""

import httpx
import pytest

from chit import ServiceIdentity, ServiceKey
from chit.errors import FetchError, TokenRequestError
from chit.sdk.settings import DEFAULT_ISSUER, client_secret_variable, explain

KEY = "ed25519-private/" + "11" * 32  # any 32 bytes are an Ed25519 private key


def exit_message(excinfo: pytest.ExceptionInfo[SystemExit]) -> str:
    """The text a ``SystemExit`` prints: its code, a string (so the exit status is 1)."""
    assert isinstance(excinfo.value.code, str)
    return excinfo.value.code


@pytest.mark.parametrize(
    ("client_id", "variable"),
    [("cart", "CART_CLIENT_SECRET"), ("image-store", "IMAGE_STORE_CLIENT_SECRET"), ("a.b c", "A_B_C_CLIENT_SECRET")],
)
def test_client_secret_variable(client_id: str, variable: str) -> None:
    assert client_secret_variable(client_id) == variable


def test_identity_from_env_reads_the_secret_and_the_issuer() -> None:
    identity = ServiceIdentity.from_env("image-store", environ={"IMAGE_STORE_CLIENT_SECRET": "s3cret"})
    assert (identity.client_id, identity.issuer) == ("image-store", DEFAULT_ISSUER)
    environ = {"CART_CLIENT_SECRET": "s3cret", "CHIT_ISSUER": "https://auth.example"}
    assert ServiceIdentity.from_env("cart", environ=environ).issuer == "https://auth.example"
    given = ServiceIdentity.from_env("cart", issuer="https://other.example", environ=environ)
    assert given.issuer == "https://other.example"
    assert "s3cret" not in repr(given)


@pytest.mark.parametrize("environ", [{}, {"CART_CLIENT_SECRET": ""}, {"CART_CLIENT_SECRET": "  "}])
def test_identity_from_env_exits_naming_the_fix_without_a_secret(environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        ServiceIdentity.from_env("cart", environ=environ)
    assert exit_message(excinfo) == (
        "chit: CART_CLIENT_SECRET is not set: set it to the client_secret that "
        "`chit service register cart.toml` printed"
    )


def test_service_key_from_env() -> None:
    key = ServiceKey.from_env("cart", environ={"CHIT_SERVICE_KEY": KEY})
    assert (key.service_id, key.private_key) == ("cart", KEY)
    named = ServiceKey.from_env(environ={"CHIT_SERVICE_ID": "cart", "CHIT_SERVICE_KEY": KEY})
    assert named == key
    assert ServiceKey.from_env("cart", environ={"CHIT_SERVICE_ID": "cart", "CHIT_SERVICE_KEY": KEY}) == key


@pytest.mark.parametrize(
    ("service_id", "environ", "fragments"),
    [
        ("cart", {}, ["CHIT_SERVICE_ID=cart", "CHIT_SERVICE_KEY", "`chit service key cart`"]),
        (None, {"CHIT_SERVICE_KEY": KEY}, ["CHIT_SERVICE_ID=SERVICE_ID", "`chit service key SERVICE_ID`"]),
        ("cart", {"CHIT_SERVICE_KEY": "ed25519/abc"}, ["does not hold a service key", "`chit service key cart`"]),
        ("cart", {"CHIT_SERVICE_ID": "payment", "CHIT_SERVICE_KEY": KEY}, ["is 'payment' but this is cart"]),
    ],
)
def test_service_key_from_env_exits_naming_the_fix(
    service_id: str | None, environ: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        ServiceKey.from_env(service_id, environ=environ)
    message = exit_message(excinfo)
    assert message.startswith("chit: ")
    for fragment in fragments:
        assert fragment in message


def test_the_constructor_stays_the_path_that_raises() -> None:
    with pytest.raises(ValueError, match="ed25519-private"):
        ServiceKey("cart", "not a key")
    with pytest.raises(TypeError, match="environ="):
        ServiceKey.from_env({"CHIT_SERVICE_KEY": KEY})  # type: ignore[arg-type]


def test_explain_names_the_fix_for_what_the_settings_cause() -> None:
    issuer = "http://127.0.0.1:8700"
    refused = explain(TokenRequestError("invalid_client", "client authentication failed", 401), issuer, "cart")
    assert refused is not None
    assert refused.startswith("the auth server refused cart's client secret: set CART_CLIENT_SECRET to")
    try:
        raise TokenRequestError("temporarily_unavailable", "All connection attempts failed", 503) from (
            httpx.ConnectError("All connection attempts failed")
        )
    except TokenRequestError as exc:
        unreachable = explain(exc, issuer, "cart")
    assert unreachable == (
        "cannot reach the auth server at http://127.0.0.1:8700 (ConnectError: All connection attempts failed): "
        "start it with `chit serve`, or set CHIT_ISSUER to its URL; writes are refused until it answers"
    )
    assert explain(httpx.ReadTimeout("timed out"), issuer, "cart") is not None
    assert explain(FetchError("not JSON"), issuer, "cart") is not None
    assert explain(TokenRequestError("invalid_scope", "no"), issuer, "cart") is None
    assert explain(ValueError("odd"), issuer, "cart") is None
