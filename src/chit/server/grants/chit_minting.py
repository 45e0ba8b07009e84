"""The last step of a token exchange (RFC 8693): what the exchange decided, signed as a JWT access token or
minted as a chit (``requested_token_type=urn:chit:token-type:biscuit``, DESIGN §4 "Chits on the wire").

Every source decides who and what once, as an ``Issuance``: a user's access token exchanged by a service
(``delegation``), a deferred-delegation handle (``deferred``), an API key (``api_key_exchange``), or an
access token presented by the very client it was issued to (``reissue_to_own_client``, chits only: same
subject, same chain, no actor added). The requested token type only chooses the form.

A chit names no audience, so where a JWT would be addressed to fewer services than its permissions name,
the chit carries only those services' rights; and a chit never carries a permission with a ``*`` segment.
A requested permission the chit cannot carry is ``invalid_scope``; so is a chit that would keep nothing
of what the source grants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chit.core.biscuit import is_concrete
from chit.core.claims import AccessTokenClaims
from chit.errors import InvalidRequestError, InvalidScopeError
from chit.policy import delegation
from chit.policy.permissions import Permission, format_scope
from chit.policy.scopes import parse_permissions, select_scope
from chit.server.authserver import AuthServer
from chit.server.forms import targets
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope
from chit.storage.records import Client

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
BISCUIT_TOKEN_TYPE = "urn:chit:token-type:biscuit"


@dataclass(frozen=True)
class Issuance:
    """Who and what an exchange issues, whatever the form; see ``AuthServer.issue_access_token``."""

    subject: str
    client: Client
    permissions: frozenset[Permission]
    act: Mapping[str, Any] | None = None
    aud: tuple[str, ...] | None = None  # None: the services the permissions name
    session_id: str | None = None
    not_after: int | None = None


def wants_chit(request: TokenRequest) -> bool:
    return request.params.get("requested_token_type") == BISCUIT_TOKEN_TYPE


def issue(server: AuthServer, request: TokenRequest, issuance: Issuance) -> IssuedTokens:
    """A JWT access token, or a chit when the request asks for one."""
    if not wants_chit(request):
        access = server.issue_access_token(
            subject=issuance.subject,
            client=issuance.client,
            permissions=issuance.permissions,
            session_id=issuance.session_id,
            act=issuance.act,
            aud=issuance.aud,
            not_after=issuance.not_after,
        )
        return IssuedTokens(access, issued_token_type=ACCESS_TOKEN_TYPE)
    chit = server.mint_chit(
        subject=issuance.subject,
        client=issuance.client,
        permissions=chit_rights(issuance.permissions, issuance.aud, requested_scope(request.params)),
        session_id=issuance.session_id,
        act=issuance.act,
        not_after=issuance.not_after,
    )
    return IssuedTokens(chit, issued_token_type=BISCUIT_TOKEN_TYPE)


def chit_rights(
    permissions: frozenset[Permission], aud: tuple[str, ...] | None, requested: frozenset[Permission] | None
) -> frozenset[Permission]:
    """What a chit carries of ``permissions``: no wildcard, and only the ``aud`` services' when narrowed."""
    rights = frozenset(p for p in permissions if is_concrete(str(p)) and (aud is None or p.service in aud))
    left_out = permissions - rights
    if requested is not None and left_out:
        raise InvalidScopeError(
            f"a chit cannot carry {format_scope(left_out)}: never a '*' permission, only its audience's"
        )
    if permissions and not rights:
        raise InvalidScopeError("nothing of the grant can go into a chit: it never carries a '*' permission")
    return rights


def reissue_to_own_client(server: AuthServer, request: TokenRequest, claims: AccessTokenClaims) -> IssuedTokens:
    """A chit for the client an access token was issued to: the token's subject and chain, its scope (only
    the services it is addressed to) ∩ ``scope``, never outliving it; ``audience``/``resource`` narrow."""
    subject = server.active_subject(claims)
    if subject is None:
        raise InvalidRequestError("the subject_token is revoked")
    request.context.actors = delegation.names(delegation.chain_of(claims.act))
    available = frozenset(p for p in parse_permissions(claims.scope) if p.service in claims.aud)
    permissions = select_scope(available, requested_scope(request.params))
    aud = delegation.narrowed_audience(
        permissions, targets(request.params), lambda target: server.store.service(target) is not None
    )
    issuance = Issuance(
        subject=claims.sub,
        client=request.client,
        permissions=permissions,
        act=claims.act,
        aud=aud,
        session_id=claims.sid,  # logging out ends what came from the login
        not_after=claims.exp,
    )
    return issue(server, request, issuance)
