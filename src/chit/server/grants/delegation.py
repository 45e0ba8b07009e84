"""Delegation by token exchange (RFC 8693, DESIGN §4): a service acting for a user now, and impersonation.

*Now, for a user*: a registered service exchanges a user's access token that names it in ``aud`` for
a token with ``sub`` the user and ``act`` the service, the subject token's own ``act`` nested inside.
The scope is the subject token's ∩ the service's ``[on_behalf].permissions`` ∩ what the user holds now
∩ ``scope``; ``audience``/``resource`` narrow where the token may be presented (not what it carries,
so that the next service in the chain can exchange it in turn); it never outlives the subject token
and keeps its ``sid``, so that logging out ends every token exchanged from the login.

*Impersonation*, the last resort: a service holding ``chit:users:impersonate`` asks for a user by name
(``requested_subject``), without the user's token; the token is shaped the same, limited to the
service's ``[on_behalf].permissions`` ∩ what the user holds now, and every use is audited.

``act``, ``may_act`` or any other claim sent as a parameter or header is never read: the issued ``act``
is always the authenticated client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chit.core.claims import AccessTokenClaims
from chit.errors import InvalidRequestError, InvalidTokenError, UnauthorizedClientError
from chit.policy import administration as rules
from chit.policy import delegation
from chit.policy.permissions import Permission
from chit.policy.principals import Actor
from chit.policy.scopes import parse_permissions
from chit.server.audit import SUCCESS
from chit.server.authserver import AuthServer
from chit.server.forms import targets
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope
from chit.server.grants.chit_minting import ACCESS_TOKEN_TYPE, Issuance, issue
from chit.storage.records import Client, ServiceRecord, User

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})


@dataclass(frozen=True)
class Exchanger:
    """The registered service exchanging: its own client and what its manifest lets it do for users."""

    client: Client
    service: ServiceRecord

    @property
    def actor(self) -> Actor:
        return Actor(self.client.id, self.client.client_id)


def exchanging_service(server: AuthServer, request: TokenRequest) -> Exchanger:
    """The requesting client as a service that may act for users, else ``unauthorized_client``."""
    client = request.client
    service = server.store.service(client.client_id)
    if service is None or not service.on_behalf:
        raise UnauthorizedClientError(
            f"{client.client_id} may not act for users: only a registered service whose manifest lists"
            " [on_behalf] permissions may"
        )
    return Exchanger(client, service)


def check_actor_token(server: AuthServer, request: TokenRequest) -> None:
    """An ``actor_token`` may only be the exchanging client's own valid access token (it proves nothing
    more than client authentication did, and never changes the issued ``act``)."""
    params = request.params
    if "actor_token" not in params and "actor_token_type" not in params:
        return
    token, token_type = params.get("actor_token"), params.get("actor_token_type")
    if token is None or token_type is None:
        raise InvalidRequestError("actor_token and actor_token_type go together (RFC 8693 §2.1)")
    if token_type not in ACCESS_TOKEN_TYPES:
        raise InvalidRequestError(f"unsupported actor_token_type; supported: {ACCESS_TOKEN_TYPE}")
    client = request.client
    claims = server.verify_active_access_token(token)
    if claims is None or claims.sub != client.id or claims.client_id != client.client_id or claims.act is not None:
        raise InvalidRequestError("the actor_token must be the exchanging client's own valid access token")


def verified_subject_token(server: AuthServer, request: TokenRequest, token: str) -> AccessTokenClaims:
    """The claims of a subject token this server signed, unexpired (``invalid_request`` otherwise)."""
    try:
        claims = server.decode_own_access_token(token)
    except InvalidTokenError as exc:
        raise InvalidRequestError(f"the subject_token is not a valid access token of this server: {exc}") from None
    request.context.subject = claims.sub
    request.context.detail["subject_token"] = claims.jti
    return claims


def subject_token_claims(server: AuthServer, request: TokenRequest, token: str) -> tuple[AccessTokenClaims, User]:
    """The claims and user of a subject token: this server's, active, a user's, naming the client in ``aud``."""
    claims = verified_subject_token(server, request, token)
    return claims, delegating_user(server, request, claims)


def delegating_user(server: AuthServer, request: TokenRequest, claims: AccessTokenClaims) -> User:
    """The user of a verified subject token that is active and names the exchanging client in ``aud``."""
    client = request.client
    if client.client_id not in claims.aud:
        raise InvalidRequestError(f"the subject_token is not addressed to {client.client_id} (its aud)")
    subject = server.active_subject(claims)
    if subject is None:
        raise InvalidRequestError("the subject_token is revoked")
    if not isinstance(subject, User):
        raise InvalidRequestError("the subject_token is not a user's: a service account acts as itself")
    return subject


def issue_delegated(
    server: AuthServer,
    request: TokenRequest,
    exchanger: Exchanger,
    *,
    user: User,
    limit: Iterable[str],
    caps: Iterable[Iterable[Permission]] = (),
    act_below: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    not_after: int | None = None,
) -> IssuedTokens:
    """A token (a JWT, or a chit when asked for) for ``user`` with the exchanger as current actor and
    ``act_below`` nested inside; its scope is ``limit`` (the manifest's) ∩ each of ``caps`` ∩ what the
    user holds now ∩ ``scope``."""
    chain = delegation.chain_of(act_below)
    client = exchanger.client
    request.context.subject = user.id
    request.context.actors = delegation.names((exchanger.actor, *chain))
    delegation.check_chain(chain, client.client_id, server.settings.max_delegation_depth)
    held = parse_permissions(server.store.permissions_of(user.id))
    permissions = delegation.delegated_permissions(
        [parse_permissions(limit), *caps, held], requested_scope(request.params)
    )
    aud = delegation.narrowed_audience(
        permissions, targets(request.params), lambda target: server.store.service(target) is not None
    )
    issuance = Issuance(
        subject=user.id,
        client=client,
        permissions=permissions,
        act=delegation.nested(act_below, client.id, client.client_id),
        aud=aud,
        session_id=session_id,
        not_after=not_after,
    )
    return issue(server, request, issuance)


def delegate_now(server: AuthServer, request: TokenRequest, subject_token: str | AccessTokenClaims) -> IssuedTokens:
    """For the user of a subject token, now; a chit request passes it verified already (to tell whose it is)."""
    exchanger = exchanging_service(server, request)  # before the token: a client that is no such service learns nothing
    if isinstance(subject_token, AccessTokenClaims):
        claims = subject_token
    else:
        claims = verified_subject_token(server, request, subject_token)
    user = delegating_user(server, request, claims)
    return issue_delegated(
        server,
        request,
        exchanger,
        user=user,
        limit=exchanger.service.on_behalf,
        caps=[parse_permissions(claims.scope)],
        act_below=claims.act,
        session_id=claims.sid,  # logging out ends what was exchanged from the login
        not_after=claims.exp,
    )


def impersonate(server: AuthServer, request: TokenRequest, username: str) -> IssuedTokens:
    client = request.client
    held = parse_permissions(client.scope or ()) | parse_permissions(server.store.permissions_of(client.id))
    if not rules.holds(held, rules.IMPERSONATE):
        raise UnauthorizedClientError(f"impersonating a user takes {rules.IMPERSONATE}")
    exchanger = exchanging_service(server, request)
    request.context.detail["requested_subject"] = username[:100]
    user = server.store.user_by_username(username)
    if user is None or user.disabled:
        raise InvalidRequestError("requested_subject names no enabled user")
    issued = issue_delegated(server, request, exchanger, user=user, limit=exchanger.service.on_behalf)
    claims = issued.access.claims
    request.event(
        "token.impersonated",
        SUCCESS,
        subject=user.id,
        actors=request.context.actors,
        token_id=claims.jti,
        detail={"username": user.username, "scope": " ".join(claims.scope)},
    )
    return issued
