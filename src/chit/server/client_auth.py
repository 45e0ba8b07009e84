"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3.1).

``client_secret_basic`` and ``client_secret_post``; public clients identify themselves with
``client_id`` alone. Every failure answers the same 401 ``invalid_client`` (with
``WWW-Authenticate: Basic`` when Basic was tried), whether the client is unknown, disabled or the
secret is wrong, and takes the same time: the secret is hashed and compared either way.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote_plus

from chit.errors import InvalidClientError, InvalidRequestError
from chit.policy.text import text_problem
from chit.server.credentials import secret_matches
from chit.storage.records import Client
from chit.storage.sql.store import Store

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="chit"'}


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError("malformed Basic credentials", headers=_BASIC_CHALLENGE) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError("malformed Basic credentials", headers=_BASIC_CHALLENGE)
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(
    store: Store,
    params: Mapping[str, str],
    authorization: str | None,
    *,
    allow_public: bool = True,
) -> Client:
    basic = _basic_credentials(authorization) if authorization else None
    if authorization and basic is None:
        raise InvalidClientError("unsupported client authentication scheme", headers=_BASIC_CHALLENGE)
    body_id, body_secret = params.get("client_id"), params.get("client_secret")
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequestError("use one client authentication method, not two")
        if body_id is not None and body_id != basic[0]:
            raise InvalidRequestError("client_id does not match the authenticated client")
        return _check(store, basic[0], basic[1], _BASIC_CHALLENGE, allow_public)
    if body_id is None:
        raise InvalidClientError("client authentication is required")
    return _check(store, body_id, body_secret, {}, allow_public)


def _check(store: Store, client_id: str, secret: str | None, challenge: dict[str, str], allow_public: bool) -> Client:
    # no client id holds a control character: such an id (Basic credentials are not a form) is unknown, and is
    # not sent to a database that cannot store it (PostgreSQL text refuses NUL)
    client = None if text_problem(client_id) else store.client_by_client_id(client_id, with_permissions=True)
    if client is None or client.disabled:
        if secret is not None:
            secret_matches(secret, None)  # same work as for a known client
        raise _failed(challenge)
    if client.public:
        if secret or not allow_public:
            raise _failed(challenge)
        return client
    if secret is None or not secret_matches(secret, client.secret_hash):
        raise _failed(challenge)
    return client


def _failed(challenge: dict[str, str]) -> InvalidClientError:
    return InvalidClientError("client authentication failed", headers=challenge)
