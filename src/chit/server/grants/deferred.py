"""Deferred delegation (DESIGN §4): a service acting for a user later, from an asynchronous job.

At request time the service exchanges the user's token with
``requested_token_type=urn:chit:token-type:deferred-delegation`` for an opaque handle
``chit_dd_<id>.<secret>``, stored hashed: bounded to its manifest's ``[on_behalf].deferred`` ∩ the
subject token's scope ∩ what the user holds, bound to an optional ``job_id``, alive ``expires_in``
seconds (at most ``CHIT_MAX_DEFERRED_TTL``). Hours later the job exchanges the handle
(``subject_token_type`` that URN) for a short access token, or a chit, shaped like any delegated one;
its scope is narrowed again to what the user holds *then*, its ``sid`` is the delegation's id (revoking
the handle ends what it gave), and it never outlives the handle. Only the service it was issued to
redeems it; disabling the user or revoking everything of theirs (``revoked_before``) ends it. It is made
from a user's own token only: not from one redeemed from another handle or exchanged from an API key,
whose end it would not follow.
"""

from __future__ import annotations

import json

from chit.errors import InvalidRequestError, RefusedError, UnauthorizedClientError
from chit.policy import delegation
from chit.policy.scopes import parse_permissions
from chit.server.audit import SUCCESS
from chit.server.authserver import AuthServer
from chit.server.credentials import (
    format_deferred_delegation,
    hash_secret,
    new_secret,
    parse_deferred_delegation,
    secret_matches,
)
from chit.server.forms import targets
from chit.server.grants.base import IssuedHandle, IssuedTokens, TokenRequest, requested_scope
from chit.server.grants.delegation import exchanging_service, issue_delegated, subject_token_claims
from chit.storage.records import API_KEY_PREFIX, DELEGATION_PREFIX, DelegationRecord, new_id

DEFERRED_TOKEN_TYPE = "urn:chit:token-type:deferred-delegation"
DEFAULT_TTL = 86_400
MAX_JOB_ID = 200
MAX_LIVE_PER_USER = 1000  # live handles one service may hold for one user: creation is bounded too


def _job_id(request: TokenRequest) -> str | None:
    job_id = request.params.get("job_id")
    if job_id is not None and (len(job_id) > MAX_JOB_ID or not job_id.isprintable()):
        raise InvalidRequestError(f"job_id is at most {MAX_JOB_ID} printable characters")
    return job_id


def _expires_in(request: TokenRequest, most: int) -> int:
    raw = request.params.get("expires_in")
    if raw is None:
        return min(DEFAULT_TTL, most)
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or not 1 <= int(raw) <= most:
        raise InvalidRequestError(f"expires_in is a whole number of seconds from 1 to {most}")
    return int(raw)


def create(server: AuthServer, request: TokenRequest, subject_token: str) -> IssuedHandle:
    # the handle's time is taken before its token is checked: a logout of its user committed after that check
    # (revoked_before = its second + 1) then still ends the handle
    now = server.now()
    exchanger = exchanging_service(server, request)
    service, client = exchanger.service, exchanger.client
    if not service.deferred:
        raise UnauthorizedClientError(f"{client.client_id}'s manifest lists no [on_behalf].deferred permissions")
    job_id, expires_in = _job_id(request), _expires_in(request, server.settings.max_deferred_ttl)
    request.context.detail["job_id"] = job_id
    if targets(request.params):
        raise InvalidRequestError("a deferred delegation is addressed when it is redeemed: no audience or resource")
    claims, user = subject_token_claims(server, request, subject_token)
    if claims.sid is not None and claims.sid.startswith((DELEGATION_PREFIX, API_KEY_PREFIX)):
        # a handle lives on its own (days, whatever its source's fate): made from a token redeemed from another
        # handle or exchanged from an API key, it would outlive that handle's or key's expiry and revocation
        raise InvalidRequestError(
            "a deferred delegation is made from a user's own token, not from one redeemed from a deferred"
            " delegation or exchanged from an API key"
        )
    chain = delegation.chain_of(claims.act)
    request.context.actors = delegation.names((exchanger.actor, *chain))
    delegation.check_chain(chain, client.client_id, server.settings.max_delegation_depth)
    scope = delegation.delegated_permissions(
        [
            parse_permissions(service.deferred),
            parse_permissions(claims.scope),
            parse_permissions(server.store.permissions_of(user.id)),
        ],
        requested_scope(request.params),
    )
    secret = new_secret()
    record = DelegationRecord(
        id=new_id(DELEGATION_PREFIX),
        subject_id=user.id,
        client_id=client.client_id,
        secret_hash=hash_secret(secret),
        scope=frozenset(str(p) for p in scope),
        job_id=job_id,
        act=None if claims.act is None else json.dumps(claims.act, separators=(",", ":"), sort_keys=True),
        created_at=now,
        expires_at=now + expires_in,
    )
    try:
        server.store.create_delegation(record, max_active=MAX_LIVE_PER_USER, now=now)
    except RefusedError as exc:
        raise InvalidRequestError(str(exc)) from None
    request.context.detail["delegation"] = record.id
    request.event(
        "delegation.created",
        SUCCESS,
        subject=user.id,
        actors=request.context.actors,
        token_id=record.id,
        detail={"job_id": job_id, "scope": " ".join(sorted(record.scope)), "expires_at": record.expires_at},
    )
    return IssuedHandle(
        token=format_deferred_delegation(record.id, secret),
        id=record.id,
        subject=user.id,
        expires_in=expires_in,
        scope=tuple(sorted(record.scope)),
        issued_token_type=DEFERRED_TOKEN_TYPE,
    )


def redeem(server: AuthServer, request: TokenRequest, handle: str) -> IssuedTokens:
    exchanger = exchanging_service(server, request)
    store = server.store
    parsed = parse_deferred_delegation(handle)
    record = store.delegation(parsed[0]) if parsed else None
    if parsed is None or record is None or not secret_matches(parsed[1], record.secret_hash):
        raise InvalidRequestError("the deferred delegation is invalid")
    request.context.subject = record.subject_id
    request.context.detail.update(delegation=record.id, job_id=record.job_id)
    if record.client_id != exchanger.client.client_id:
        raise InvalidRequestError("the deferred delegation was issued to another service")
    now = server.now()
    if record.revoked_at is not None or record.expires_at <= now:
        raise InvalidRequestError("the deferred delegation is revoked or expired")
    user = store.user_by_id(record.subject_id)
    if user is None or user.disabled or record.created_at < user.revoked_before:
        raise InvalidRequestError(
            "the deferred delegation ended: its user is disabled or everything of theirs was revoked"
        )
    act_below = None if record.act is None else json.loads(record.act)
    if act_below is not None and not server.actors_enabled(act_below):
        raise InvalidRequestError("the deferred delegation ended: a service in its chain is disabled or gone")
    issued = issue_delegated(
        server,
        request,
        exchanger,
        user=user,
        limit=exchanger.service.deferred,  # the manifest as it stands now
        caps=[parse_permissions(record.scope)],
        act_below=act_below,
        session_id=record.id,
        not_after=record.expires_at,
    )
    # counted by this event, in the audit's transaction (migration 0008): a revocation that commits
    # between the read above and now ends the token anyway, whose ``sid`` is the delegation
    request.event(
        "delegation.redeemed",
        SUCCESS,
        subject=user.id,
        actors=request.context.actors,
        token_id=record.id,
        detail={"job_id": record.job_id, "token": issued.access.claims.jti},
    )
    return issued
