"""Token exchange (RFC 8693): what the subject token is decides what the exchange does.

- an API key (``urn:chit:token-type:api-key``), exchanged by the gateway: ``api_key_exchange``;
- a user's access token (``...:access_token`` or ``...:jwt``), exchanged by a service acting for the
  user now (``delegation``) or, with ``requested_token_type=urn:chit:token-type:deferred-delegation``,
  for later (``deferred``);
- a deferred-delegation handle, redeemed by the service it was issued to (``deferred``);
- no subject token but ``requested_subject``: impersonation (``delegation``).

``requested_token_type=urn:chit:token-type:biscuit`` asks for the same grant as a chit (``chit_minting``);
then an access token may also be presented by the client it was issued to, for a chit of its own.
Impersonation answers access tokens only.

An ``actor_token``, when sent, must be the exchanging client's own access token; the issued ``act`` is
always the authenticated client, whatever else the request carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from chit.errors import InvalidRequestError
from chit.server.authserver import AuthServer
from chit.server.grants import deferred
from chit.server.grants.api_key_exchange import API_KEY_TOKEN_TYPE, exchange_api_key
from chit.server.grants.base import IssuedHandle, IssuedTokens, TokenRequest
from chit.server.grants.chit_minting import ACCESS_TOKEN_TYPE, BISCUIT_TOKEN_TYPE, reissue_to_own_client
from chit.server.grants.delegation import (
    ACCESS_TOKEN_TYPES,
    check_actor_token,
    delegate_now,
    impersonate,
    verified_subject_token,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, deferred.DEFERRED_TOKEN_TYPE, API_KEY_TOKEN_TYPE)
REQUESTED_OTHER_TYPES = (BISCUIT_TOKEN_TYPE, deferred.DEFERRED_TOKEN_TYPE)


def exchange_runs_inline(params: Mapping[str, str]) -> bool:
    """Acting for a user now, impersonating, or redeeming a deferred delegation: reads only, none of
    which waits for a lock on an event loop (see app.py); the audit event, which counts a redemption
    too, is written apart. Creating a deferred delegation (an INSERT after a count) does not."""
    if params.get("requested_token_type") == deferred.DEFERRED_TOKEN_TYPE:
        return False
    subject_type = params.get("subject_token_type")
    return (
        "requested_subject" in params
        or subject_type in ACCESS_TOKEN_TYPES
        or subject_type == deferred.DEFERRED_TOKEN_TYPE
    )


class TokenExchangeGrant:
    grant_type: ClassVar[str] = GRANT_TYPE

    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def issue(self, request: TokenRequest) -> IssuedTokens | IssuedHandle:
        params = request.params
        requested_type = params.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if requested_type not in ACCESS_TOKEN_TYPES and requested_type not in REQUESTED_OTHER_TYPES:
            raise InvalidRequestError(
                f"unsupported requested_token_type; supported: {ACCESS_TOKEN_TYPE}, {', '.join(REQUESTED_OTHER_TYPES)}"
            )
        check_actor_token(self.server, request)
        if "requested_subject" in params:
            if "subject_token" in params or "subject_token_type" in params:
                raise InvalidRequestError("impersonation names requested_subject and sends no subject_token")
            self._only_access_token(requested_type, "impersonation")
            return impersonate(self.server, request, params["requested_subject"])
        subject_token = request.require("subject_token")
        subject_type = request.require("subject_token_type")
        if subject_type in ACCESS_TOKEN_TYPES:
            if requested_type == deferred.DEFERRED_TOKEN_TYPE:
                return deferred.create(self.server, request, subject_token)
            if requested_type != BISCUIT_TOKEN_TYPE:
                return delegate_now(self.server, request, subject_token)
            # a chit of the client's own token, or of a user's token it acts for: whose token it is tells
            claims = verified_subject_token(self.server, request, subject_token)
            if claims.client_id == request.client.client_id:
                return reissue_to_own_client(self.server, request, claims)
            return delegate_now(self.server, request, claims)
        if subject_type == deferred.DEFERRED_TOKEN_TYPE:
            self._no_handle(requested_type, "a deferred delegation")
            return deferred.redeem(self.server, request, subject_token)
        if subject_type == API_KEY_TOKEN_TYPE:
            self._no_handle(requested_type, "an API key")
            return exchange_api_key(self.server, request, subject_token)
        raise InvalidRequestError(f"unsupported subject_token_type; supported: {', '.join(SUBJECT_TOKEN_TYPES)}")

    @staticmethod
    def _only_access_token(requested_type: str, what: str) -> None:
        if requested_type not in ACCESS_TOKEN_TYPES:
            raise InvalidRequestError(f"{what} is exchanged for an access token only")

    @staticmethod
    def _no_handle(requested_type: str, what: str) -> None:
        if requested_type == deferred.DEFERRED_TOKEN_TYPE:
            raise InvalidRequestError(f"{what} is exchanged for an access token or a chit only")
