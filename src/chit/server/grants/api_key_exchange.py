"""Token exchange of an API key (``subject_token_type=urn:chit:token-type:api-key``).

A bot presents its API key at the edge; a trusted client (the gateway, holding
``chit:api-keys:exchange``) exchanges it here for a short-lived access token, so that services only
ever see one kind of token. The token (a JWT, or a chit when asked for) carries the key's scope ∩ what
its owner holds now, narrowed by ``scope`` (and addressed to ``audience``/``resource`` when named), never
outlives the key, and comes with no refresh token.
"""

from __future__ import annotations

from chit.errors import InvalidGrantError, UnauthorizedClientError
from chit.policy import administration as rules
from chit.policy import delegation
from chit.policy.permissions import intersect, parse_all
from chit.policy.scopes import parse_permissions, select_scope
from chit.server.audit import SUCCESS
from chit.server.authserver import AuthServer
from chit.server.credentials import parse_api_key, secret_matches
from chit.server.forms import targets
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope
from chit.server.grants.chit_minting import Issuance, issue

API_KEY_TOKEN_TYPE = "urn:chit:token-type:api-key"
EXCHANGE_API_KEYS = "chit:api-keys:exchange"


def exchange_api_key(server: AuthServer, request: TokenRequest, subject_token: str) -> IssuedTokens:
    wanted = requested_scope(request.params)
    store = server.store
    client = request.client
    client_perms = parse_permissions(client.scope or ()) | parse_permissions(store.permissions_of(client.id))
    if not rules.holds(client_perms, EXCHANGE_API_KEYS):
        raise UnauthorizedClientError(f"exchanging API keys needs {EXCHANGE_API_KEYS}")

    parsed = parse_api_key(subject_token)
    record = store.api_key(parsed[0]) if parsed else None
    now = server.now()
    if parsed is None or record is None or not secret_matches(parsed[1], record.secret_hash):
        raise InvalidGrantError("the API key is invalid")
    if record.revoked_at is not None or (record.expires_at is not None and record.expires_at <= now):
        raise InvalidGrantError("the API key is revoked or expired")
    owner_client = store.client_by_pk(record.owner_id)
    owner_user = None if owner_client else store.user_by_id(record.owner_id)
    if (owner_client is None or owner_client.disabled) and (owner_user is None or owner_user.disabled):
        raise InvalidGrantError("the API key's owner is disabled or gone")
    if owner_user is not None and record.created_at < owner_user.revoked_before:
        raise InvalidGrantError("the API key is revoked or expired")  # created before its owner was disabled
    held = parse_permissions(store.permissions_of(record.owner_id))
    if owner_client is not None:
        held |= parse_permissions(owner_client.scope or ())
    granted = select_scope(intersect(held, parse_all(record.scope)), wanted)
    aud = delegation.narrowed_audience(granted, targets(request.params), lambda named: store.service(named) is not None)
    store.touch_api_key(record.id, now)
    # the key's id as sid: revoking the key revokes every token exchanged from it; none outlives the key, whose
    # expiry sends services no event
    issuance = Issuance(
        subject=record.owner_id,
        client=client,
        permissions=granted,
        aud=aud,
        session_id=record.id,
        not_after=record.expires_at,
    )
    issued = issue(server, request, issuance)
    request.event(
        "api_key.exchanged",
        SUCCESS,
        subject=record.owner_id,
        token_id=issued.access.claims.jti,
        detail={"key_id": record.id},
    )
    return issued
