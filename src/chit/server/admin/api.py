"""The admin REST API under ``/admin/``, authorized by chit's own tokens and ``chit:*`` permissions.

A thin adapter: each route authenticates the caller, then calls ``Administration``, which checks the
caller's permissions, validates, writes and audits. Errors answer JSON ``{"error", "error_description"}``:
400 bad input (a control character in a body field, path or query parameter among it), 401/403 per
RFC 6750, 404 unknown, 409 already exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPBearer

from chit.errors import RefusedError
from chit.policy.manifest import parse_manifest
from chit.policy.text import texts_problem
from chit.server.admin import models
from chit.server.admin.auth import actor_from
from chit.server.administration import Administration, delegation_state
from chit.server.authserver import AuthServer
from chit.storage.records import DELEGATION_PREFIX, ApiKeyRecord, AuditRecord, Client, DelegationRecord, User

MAX_INT64 = 2**63 - 1  # what a database integer column holds: larger is a client's mistake, not a 500
_bearer = HTTPBearer(auto_error=False, description="An access token of this server with chit:* permissions")


def _user(u: User) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "disabled": u.disabled, "created_at": u.created_at}


def _client(c: Client) -> dict[str, Any]:
    return {
        "id": c.id,
        "client_id": c.client_id,
        "public": c.public,
        "grant_types": sorted(c.grant_types),
        "scope": None if c.scope is None else sorted(c.scope),
        "disabled": c.disabled,
        "created_at": c.created_at,
    }


def _api_key(k: ApiKeyRecord) -> dict[str, Any]:
    data = asdict(k)
    data.pop("secret_hash")
    data["scope"] = sorted(k.scope)
    return data


def _delegations(server: AuthServer, records: list[DelegationRecord]) -> list[dict[str, Any]]:
    users = {user_id: server.store.user_by_id(user_id) for user_id in {r.subject_id for r in records}}
    now = server.now()
    return [
        {
            "id": r.id,
            "user": None if (user := users[r.subject_id]) is None else user.username,
            "user_id": r.subject_id,
            "service": r.client_id,
            "scope": sorted(r.scope),
            "job_id": r.job_id,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "revoked_at": r.revoked_at,
            "last_used_at": r.last_used_at,
            "redemptions": r.redemptions,
            "state": delegation_state(r, user, now),
        }
        for r in records
    ]


def _event(r: AuditRecord) -> dict[str, Any]:
    data = asdict(r)
    data["actors"] = json.loads(r.actors)
    data["detail"] = json.loads(r.detail)
    return data


def _administration(request: Request) -> Administration:
    server: AuthServer = request.app.state.auth_server
    request.state.admin_actor = None  # the token was looked at: a refusal's audit need not look again
    actor = actor_from(server, request)
    request.state.admin_actor = actor  # for auditing a refusal raised outside Administration
    _check_parameters(request)  # after the token, as the body: who may not call at all learns nothing more
    return Administration(server, actor)


def _check_parameters(request: Request) -> None:
    """Path and query parameters hold no control characters, as bodies (``models.Strict``) and forms."""
    given: list[tuple[str, Iterable[tuple[str, Any]]]] = [
        ("path", request.path_params.items()),
        ("query", request.query_params.multi_items()),
    ]
    for where, items in given:
        for name, value in items:
            problem = texts_problem([name, value])
            if problem:
                raise RefusedError(f"{where}.{name if name.isprintable() else repr(name)}: {problem}")


Admin = Annotated[Administration, Depends(_administration)]
# the shape of an id the server makes: anything else is a client's mistake, whoever asks
DelegationId = Annotated[str, Path(pattern=rf"^{DELEGATION_PREFIX}[a-z0-9]{{1,60}}$")]


def admin_router() -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(_bearer)])

    @router.get("/users", summary="List users (chit:users:read)")
    def list_users(admin: Admin) -> dict[str, Any]:
        return {"users": [_user(u) for u in admin.users()]}

    @router.post("/users", status_code=201, summary="Create a user (chit:users:write)")
    def create_user(body: models.NewUser, admin: Admin) -> dict[str, Any]:
        return _user(admin.create_user(body.username, body.password, body.roles))

    @router.post("/users/{username}/disable", summary="Disable a user (chit:users:write)")
    def disable_user(username: str, admin: Admin) -> dict[str, Any]:
        return _user(admin.set_user_disabled(username, True))

    @router.post("/users/{username}/enable", summary="Enable a user (chit:users:write)")
    def enable_user(username: str, admin: Admin) -> dict[str, Any]:
        return _user(admin.set_user_disabled(username, False))

    @router.post("/users/{username}/logout", summary="Log a user out everywhere (chit:sessions:write)")
    def logout_user(username: str, admin: Admin) -> dict[str, Any]:
        user, sessions = admin.logout_everywhere(username)
        return {"user": _user(user), "sessions_revoked": sessions}

    @router.get("/clients", summary="List clients (chit:clients:read)")
    def list_clients(admin: Admin) -> dict[str, Any]:
        return {"clients": [_client(c) for c in admin.clients()]}

    @router.post("/clients", status_code=201, summary="Create a client; its secret is in this answer only")
    def create_client(body: models.NewClient, admin: Admin) -> dict[str, Any]:
        client, secret = admin.create_client(
            body.client_id, grant_types=body.grant_types, scope=body.scope, public=body.public
        )
        return {**_client(client), "client_secret": secret}

    @router.get("/services", summary="List registered services (chit:services:read)")
    def list_services(admin: Admin) -> dict[str, Any]:
        return {"services": [{**json.loads(s.manifest), "public_key": s.public_key} for s in admin.services()]}

    @router.delete("/services/{service_id}", summary="Remove a service and its own client (chit:services:admin)")
    def remove_service(service_id: str, admin: Admin) -> dict[str, Any]:
        admin.remove_service(service_id)
        return {"removed": service_id}

    @router.put("/services/{service_id}", summary="Register or update a service (chit:services:admin)")
    def register_service(service_id: str, body: models.ServiceManifest, admin: Admin) -> dict[str, Any]:
        manifest = parse_manifest(body.manifest, "manifest")
        if manifest.id != service_id:
            raise RefusedError(f"the manifest's id {manifest.id!r} is not {service_id!r}")
        registered = admin.register_service(manifest, body.public_key)
        outcome = registered.outcome
        return {
            "created": outcome.created,
            "changed": outcome.changed,
            "client_created": outcome.client_created,
            "service": manifest.id,
            "client_id": manifest.id,
            "client_secret": registered.client_secret,
            "public_key": registered.public_key,
            "key_changed": outcome.key_set,
            "private_key_waiting": registered.private_key_waiting,
        }

    @router.get("/roles", summary="List roles (chit:roles:read)")
    def list_roles(admin: Admin) -> dict[str, Any]:
        return {"roles": admin.roles()}

    @router.post("/roles", status_code=201, summary="Create a global role (chit:roles:write)")
    def create_role(body: models.NewRole, admin: Admin) -> dict[str, Any]:
        admin.create_role(body.name, body.permissions, body.description)
        return {"name": body.name, "permissions": sorted(set(body.permissions))}

    @router.get("/grants", summary="List grants (chit:grants:read)")
    def list_grants(admin: Admin) -> dict[str, Any]:
        return {"grants": [{"principal": p, "role": r} for p, r in admin.grants()]}

    @router.post("/grants", summary="Grant a role: its permissions must be yours to grant")
    def grant(body: models.GrantBody, admin: Admin) -> dict[str, Any]:
        return {"granted": admin.grant(body.principal, body.role)}

    @router.post("/grants/revoke", summary="Revoke a role: its permissions must be yours to grant")
    def revoke_grant(body: models.GrantBody, admin: Admin) -> dict[str, Any]:
        return {"revoked": admin.revoke_grant(body.principal, body.role)}

    @router.post("/service-admins", summary="Appoint a service admin (chit:admins:write)")
    def appoint(body: models.Appointment, admin: Admin) -> dict[str, Any]:
        return {"appointed": admin.appoint(body.username, body.service)}

    @router.get("/api-keys", summary="List API keys (yours, or anyone's with chit:api-keys:read)")
    def list_api_keys(admin: Admin, owner: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
        return {"api_keys": [_api_key(k) for k in admin.list_api_keys(owner)]}

    @router.post("/api-keys", status_code=201, summary="Create an API key; the key is in this answer only")
    def create_api_key(body: models.NewApiKey, admin: Admin) -> dict[str, Any]:
        created = admin.create_api_key(body.owner, body.scope, body.expires_in)
        return {**_api_key(created.record), "api_key": created.secret}

    @router.post("/api-keys/{key_id}/rotate", summary="Give an API key a new secret")
    def rotate_api_key(key_id: str, admin: Admin) -> dict[str, Any]:
        return {"id": key_id, "api_key": admin.rotate_api_key(key_id)}

    @router.delete("/api-keys/{key_id}", summary="Revoke an API key")
    def revoke_api_key(key_id: str, admin: Admin) -> dict[str, Any]:
        return {"revoked": admin.revoke_api_key(key_id)}

    @router.get("/sessions", summary="List sessions (refresh-token families) (chit:sessions:read)")
    def list_sessions(admin: Admin, user_id: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, Any]:
        sessions = admin.sessions(user_id)
        return {"sessions": [{**asdict(s), "scope": sorted(s.scope)} for s in sessions]}

    @router.delete("/sessions/{session_id}", summary="Revoke a session and the tokens issued from it")
    def revoke_session(session_id: str, admin: Admin) -> dict[str, Any]:
        return {"revoked": admin.revoke_session(session_id)}

    @router.get("/delegations", summary="List deferred delegations, never their secrets (chit:delegations:read)")
    def list_delegations(admin: Admin, query: Annotated[models.DelegationFilter, Query()]) -> dict[str, Any]:
        return {"delegations": _delegations(admin.server, admin.delegations(query.user))}

    @router.delete(
        "/delegations/{delegation_id}",
        summary="Revoke a deferred delegation and the tokens redeemed from it (chit:delegations:write)",
    )
    def revoke_delegation(delegation_id: DelegationId, admin: Admin) -> dict[str, Any]:
        return {"revoked": admin.revoke_delegation(delegation_id)}

    @router.get("/keys", summary="The signing keys and when each signs (chit:keys:read)")
    def list_keys(admin: Admin) -> dict[str, Any]:
        return {"keys": admin.signing_keys()}

    @router.post("/keys/rotate", summary="Rotate the signing key (chit:keys:rotate)")
    def rotate_keys(body: models.KeyRotation, admin: Admin) -> dict[str, Any]:
        return admin.rotate_keys(body.alg, body.now, body.revoke_old)

    @router.get("/audit", summary="Read the audit log, oldest first (chit:audit:read)")
    def audit(
        admin: Admin,
        type: Annotated[str | None, Query(max_length=60)] = None,
        outcome: Annotated[str | None, Query(max_length=20)] = None,
        subject: Annotated[str | None, Query(max_length=64)] = None,
        client_id: Annotated[str | None, Query(max_length=64)] = None,
        request_id: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[int | None, Query(ge=0, le=MAX_INT64, description="UTC microseconds since the epoch")] = None,
        until: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
        after: Annotated[int, Query(ge=0, le=MAX_INT64, description="Only events after this seq (paging)")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        filters = {
            k: v
            for k, v in {
                "type": type,
                "outcome": outcome,
                "subject": subject,
                "client_id": client_id,
                "request_id": request_id,
            }.items()
            if v is not None
        }
        events = admin.audit_events(after=after, limit=limit, filters=filters, since=since, until=until)
        return {"events": [_event(e) for e in events]}

    return router
