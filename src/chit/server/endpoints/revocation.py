"""Token revocation (RFC 7009).

Revoking a refresh token revokes its whole family and every access token issued from it; revoking
an access token makes introspection answer ``active: false`` at once; revoking a deferred-delegation
handle (``chit_dd_…``, whatever ``token_type_hint`` says) ends it and every access token redeemed
from it (DESIGN §4, "Delegation").

Revoking a chit revokes the revocation id of its last block. Every chit attenuated from it holds that
block, so it is revoked with it; the chit it was attenuated from does not, so it stays active: revoking
the chit as minted revokes it and everything attenuated from it, revoking an attenuation revokes that
branch only. A chit is revoked, as an access token is, only by the client it was minted for (its
authority block's ``client``), whoever holds it: a service handed an attenuated chit revokes nothing
(``unauthorized_client``). A chit that is forged, of another server's root key, or garbage answers as
an unknown token does. A token that is unknown, expired or already revoked answers 200
(§2.2); one issued to another client is refused with ``unauthorized_client`` (§2.1) and left alone.
All go through ``chit.server.revocations``, which records them and is where they are published to
the services.
"""

from __future__ import annotations

from chit.errors import InvalidRequestError, InvalidTokenError, UnauthorizedClientError
from chit.server.authserver import AuthServer
from chit.server.client_auth import authenticate_client
from chit.server.credentials import (
    DEFERRED_DELEGATION_PREFIX,
    hash_secret,
    parse_deferred_delegation,
    secret_matches,
)
from chit.server.forms import check_content_type, parse_form
from chit.server.revocations import REVOCATION_ENDPOINT, ClientRequest
from chit.storage.records import Client


class RevocationEndpoint:
    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def handle(
        self,
        body: bytes,
        *,
        content_type: str | None,
        authorization: str | None,
        source: str | None = None,
        request_id: str | None = None,
    ) -> None:
        check_content_type(content_type)
        params = parse_form(body)
        client = authenticate_client(self.server.store, params, authorization)
        token = params.get("token")
        if token is None:
            raise InvalidRequestError("missing parameter token")
        by = ClientRequest(client.client_id, source, request_id, via=REVOCATION_ENDPOINT)
        if token.startswith(DEFERRED_DELEGATION_PREFIX):
            self._deferred_delegation(token, client, by)
        elif token.count(".") == 2:
            self._access_token(token, client, by)
        elif not self._refresh_token(token, client, by):
            self._chit(token, client, by)

    def _refresh_token(self, token: str, client: Client, by: ClientRequest) -> bool:
        """Revoke a refresh token's family; False when ``token`` is no refresh token."""
        record = self.server.store.find_refresh(hash_secret(token))
        if record is None:
            return False
        if record.client_pk != client.id:
            raise UnauthorizedClientError("the token was not issued to this client")
        self.server.revocations.revoke_session(record.family_id, subject=record.user_id, by=by)
        return True

    def _chit(self, token: str, client: Client, by: ClientRequest) -> None:
        try:
            authority = self.server.read_own_chit(token)
        except InvalidTokenError:
            return
        if authority.expires_at <= self.server.now():
            return  # as an expired access token: nothing left to revoke
        if authority.client_id != client.client_id:
            raise UnauthorizedClientError("the token was not issued to this client")
        self.server.revocations.revoke_chit(
            authority.last_revocation_id, expires_at=authority.expires_at, subject=authority.subject, by=by
        )

    def _access_token(self, token: str, client: Client, by: ClientRequest) -> None:
        try:
            claims = self.server.decode_own_access_token(token)
        except InvalidTokenError:
            return
        if claims.client_id != client.client_id:
            raise UnauthorizedClientError("the token was not issued to this client")
        self.server.revocations.revoke_access_token(claims.jti, expires_at=claims.exp, subject=claims.sub, by=by)

    def _deferred_delegation(self, token: str, client: Client, by: ClientRequest) -> None:
        parsed = parse_deferred_delegation(token)
        record = self.server.store.delegation(parsed[0]) if parsed else None
        if parsed is None or record is None or not secret_matches(parsed[1], record.secret_hash):
            return
        if record.expires_at <= self.server.now():
            return  # as an expired access token: nothing left to revoke
        if record.client_id != client.client_id:
            raise UnauthorizedClientError("the token was not issued to this client")
        self.server.revocations.revoke_delegation(record.id, subject=record.subject_id, by=by)
