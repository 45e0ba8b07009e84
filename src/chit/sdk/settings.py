"""What a service reads from its environment, and the messages that name the fix when it is wrong.

A service reads its client secret from ``<SERVICE_ID>_CLIENT_SECRET`` (the id upper-cased, every character
that cannot be in a variable name turned into ``_``: ``image-store`` reads ``IMAGE_STORE_CLIENT_SECRET``),
the auth server's URL from ``CHIT_ISSUER`` and its own key from ``CHIT_SERVICE_KEY`` (``CHIT_SERVICE_ID``
naming its id). A setting missing at startup ends the process (``stop``: ``SystemExit`` with the message,
which uvicorn and ``python module.py`` print without a traceback); trouble found while running is logged
with the same kind of message (``explain``), and the service keeps trying.
"""

from __future__ import annotations

import re
from typing import NoReturn

import httpx

from chit.errors import FetchError, TokenRequestError

ISSUER_VARIABLE = "CHIT_ISSUER"
DEFAULT_ISSUER = "http://127.0.0.1:8700"  # where ``chit serve`` listens by default
SERVICE_ID_VARIABLE = "CHIT_SERVICE_ID"
SERVICE_KEY_VARIABLE = "CHIT_SERVICE_KEY"
REFUSED_CLIENT = frozenset({"invalid_client", "unauthorized_client"})


def client_secret_variable(client_id: str) -> str:
    """The environment variable holding ``client_id``'s secret: ``cart`` -> ``CART_CLIENT_SECRET``."""
    return re.sub(r"[^A-Z0-9_]", "_", client_id.upper()) + "_CLIENT_SECRET"


def stop(message: str) -> NoReturn:
    """End the process with ``chit: <message>`` on stderr and exit status 1, without a traceback."""
    raise SystemExit(f"chit: {message}")


def missing_client_secret(client_id: str) -> str:
    variable = client_secret_variable(client_id)
    return f"{variable} is not set: set it to the client_secret that `chit service register {client_id}.toml` printed"


def refused_client_secret(client_id: str) -> str:
    variable = client_secret_variable(client_id)
    return (
        f"the auth server refused {client_id}'s client secret: set {variable} to the client_secret that "
        f"`chit service register {client_id}.toml` printed when it first registered {client_id}"
    )


def missing_service_key(service_id: str | None) -> str:
    name = service_id or "SERVICE_ID"
    return (
        f"{SERVICE_ID_VARIABLE} and {SERVICE_KEY_VARIABLE} are not set: set {SERVICE_ID_VARIABLE}={name} and "
        f"{SERVICE_KEY_VARIABLE} to the private key that `chit service key {name}` prints"
    )


def invalid_service_key(service_id: str) -> str:
    return (
        f"{SERVICE_KEY_VARIABLE} does not hold a service key (ed25519-private/<hex>): set it to the private key "
        f"that `chit service key {service_id}` prints"
    )


def other_service_id(service_id: str, named: str) -> str:
    return (
        f"{SERVICE_ID_VARIABLE} is {named!r} but this is {service_id}: set {SERVICE_ID_VARIABLE}={service_id} "
        f"and {SERVICE_KEY_VARIABLE} to the private key that `chit service key {service_id}` prints"
    )


def unregistered_service_key(service_id: str, issuer: str) -> str:
    return (
        f"the key in {SERVICE_KEY_VARIABLE} is not the one registered for {service_id} at {issuer}: "
        f"run `chit service key {service_id} --rotate` and set {SERVICE_KEY_VARIABLE} to the key it prints, "
        f"or register its public key with `chit service register {service_id}.toml --public-key ed25519/<hex>`"
    )


def unreachable(issuer: str, cause: str) -> str:
    return (
        f"cannot reach the auth server at {issuer} ({cause}): start it with `chit serve`, "
        f"or set {ISSUER_VARIABLE} to its URL; writes are refused until it answers"
    )


def explain(error: BaseException, issuer: str, client_id: str) -> str | None:
    """The fix for a failure to talk to the auth server, when it is a setting's fault; None otherwise."""
    if isinstance(error, TokenRequestError) and error.error in REFUSED_CLIENT:
        return refused_client_secret(client_id)
    cause: BaseException | None = error
    if isinstance(error, TokenRequestError) and error.error == "temporarily_unavailable":
        cause = error.__cause__  # what the token request met on the way
    if isinstance(cause, httpx.TransportError | FetchError):
        return unreachable(issuer, f"{type(cause).__name__}: {cause}")
    return None
