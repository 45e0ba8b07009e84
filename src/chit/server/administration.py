"""Administrative operations, shared by the CLI and the admin API.

Each operation checks what the acting principal may do (``chit.policy.administration``), validates
its input, writes in one transaction and leaves an audit event. The CLI acts as the *operator*:
whoever can read the data directory already holds every key, so it acts with ``chit:*:*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from chit.core.keys import check_algorithm
from chit.errors import NotFoundError, RefusedError
from chit.policy import administration as rules
from chit.policy.manifest import Manifest
from chit.policy.permissions import Permission, intersect, parse_all
from chit.server.audit import AuditEvent
from chit.server.authserver import AuthServer
from chit.server.credentials import check_new_password, format_api_key, hash_password, hash_secret, new_secret
from chit.server.endpoints.token import KNOWN_GRANT_TYPES
from chit.storage.records import ApiKeyRecord, Client, Registration, User, new_id

OPERATOR_SUBJECT = "operator"


class ForbiddenError(RefusedError):
    """The acting principal may not do this (the admin API answers 403)."""


@dataclass(frozen=True)
class Actor:
    subject: str
    permissions: frozenset[Permission]
    client_id: str | None = None
    source: str | None = None
    request_id: str | None = None

    @classmethod
    def operator(cls) -> Actor:
        return cls(OPERATOR_SUBJECT, frozenset({Permission("chit", "*", "*")}), source="cli")


@dataclass(frozen=True)
class CreatedApiKey:
    record: ApiKeyRecord
    secret: str  # shown once


@dataclass
class Administration:
    server: AuthServer
    actor: Actor
    _events: list[AuditEvent] = field(default_factory=list)

    # helpers -----------------------------------------------------------------------------------

    def require(self, permission: str) -> None:
        if not rules.holds(self.actor.permissions, permission):
            raise ForbiddenError(f"missing {permission}")

    def _may_grant(self, permissions: Iterable[Permission], *, holding_suffices: bool = True) -> None:
        refused = rules.ungrantable(self.actor.permissions, permissions, holding_suffices=holding_suffices)
        if refused:
            why = "you neither hold nor administer" if holding_suffices else "you do not administer"
            raise ForbiddenError(f"{why}: {' '.join(refused)}")

    def _check_defined(self, permissions: Iterable[Permission]) -> None:
        store = self.server.store
        problems = rules.undefined(permissions, store.defined_permissions(), [s.id for s in store.services()])
        if problems:
            raise RefusedError("; ".join(problems))

    def _audit(self, type: str, *, subject: str | None = None, **detail: Any) -> None:
        self.server.audit.record(
            AuditEvent(
                type,
                client_id=self.actor.client_id,
                subject=subject,
                actors=(self.actor.subject,),
                source=self.actor.source,
                request_id=self.actor.request_id,
                detail=detail,
            )
        )

    def principal_id(self, principal: str) -> tuple[str, str]:
        """(id, description) of ``user:NAME``, ``client:ID``, or a bare name naming exactly one."""
        store = self.server.store
        kind, sep, name = principal.partition(":")
        user: User | None = None
        client: Client | None = None
        if sep and kind == "user":
            user = store.user_by_username(name)
        elif sep and kind == "client":
            client = store.client_by_client_id(name)
        else:
            user, client = store.user_by_username(principal), store.client_by_client_id(principal)
            if user and client:
                raise RefusedError(
                    f"{principal!r} names both a user and a client: write user:{principal} or client:{principal}"
                )
        if user:
            return user.id, f"user:{user.username}"
        if client:
            return client.id, f"client:{client.client_id}"
        raise NotFoundError(f"no user or client {principal!r}")

    # services ----------------------------------------------------------------------------------

    def register_service(self, manifest: Manifest) -> tuple[Registration, str | None]:
        self.require("chit:services:admin")
        store = self.server.store
        registered = [s.id for s in store.services() if s.id != manifest.id]
        # Services register in any order: what names a service not registered yet waits for it;
        # what names a registered one must be among its permissions (a typo must not grant nothing).
        named = [p for p in parse_all([*manifest.needs, *manifest.on_behalf]) if p.service in registered]
        problems = rules.undefined(named, store.defined_permissions(), registered)
        if problems:
            raise RefusedError("; ".join(problems))
        secret = new_secret()
        admin_role = (rules.service_admin_role(manifest.id), str(rules.service_admin_permission(manifest.id)))
        outcome = self.server.store.register_service(
            manifest,
            admin_role=admin_role,
            secret_hash=hash_secret(secret),
            now=self.server.now(),
        )
        if outcome.changed:
            self._audit("service.registered", service=manifest.id, created=outcome.created)
        return outcome, secret if outcome.client_created else None

    # roles and grants --------------------------------------------------------------------------

    def create_role(self, name: str, permissions: Sequence[str], description: str = "") -> None:
        self.require("chit:roles:write")
        perms = parse_all(permissions)
        if not perms:
            raise RefusedError("a role needs at least one permission")
        if ":" in name and name.split(":", 1)[0] in {s.id for s in self.server.store.services()}:
            raise RefusedError(f"role names starting with a service id belong to that service's manifest: {name!r}")
        self._check_defined(perms)
        self._may_grant(perms)
        self.server.store.create_role(name, sorted(str(p) for p in perms), self.server.now(), description)
        self._audit("role.created", role=name, permissions=sorted(str(p) for p in perms))

    def grant(self, principal: str, role: str) -> bool:
        principal_id, described = self.principal_id(principal)
        self._may_grant(parse_all(self.server.store.role_permissions(role)), holding_suffices=False)
        added = self.server.store.grant(principal_id, role, self.server.now())
        if added:
            self._audit("grant.added", subject=principal_id, principal=described, role=role)
        return added

    def revoke_grant(self, principal: str, role: str) -> bool:
        principal_id, described = self.principal_id(principal)
        self._may_grant(parse_all(self.server.store.role_permissions(role)), holding_suffices=False)
        removed = self.server.store.revoke_grant(principal_id, role)
        if removed:
            self._audit("grant.revoked", subject=principal_id, principal=described, role=role)
        return removed

    def appoint(self, username: str, service_id: str) -> bool:
        self.require("chit:admins:write")
        if self.server.store.service(service_id) is None:
            raise NotFoundError(f"no registered service {service_id!r}")
        user = self.server.store.user_by_username(username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        added = self.server.store.grant(user.id, rules.service_admin_role(service_id), self.server.now())
        if added:
            self._audit("admin.appointed", subject=user.id, username=user.username, service=service_id)
        return added

    # users and clients -------------------------------------------------------------------------

    def create_user(self, username: str, password: str, roles: Sequence[str] = ()) -> User:
        self.require("chit:users:write")
        problem = check_new_password(password)
        if problem:
            raise RefusedError(problem)
        store = self.server.store
        for role in roles:
            self._may_grant(parse_all(store.role_permissions(role)), holding_suffices=False)
        user = store.create_user(username, hash_password(password), self.server.now(), roles=roles)
        self._audit("user.created", subject=user.id, username=username, roles=sorted(set(roles)))
        return user

    def set_user_disabled(self, username: str, disabled: bool) -> User:
        self.require("chit:users:write")
        user = self.server.store.set_user_disabled(username, disabled)
        self._audit("user.disabled" if disabled else "user.enabled", subject=user.id, username=user.username)
        return user

    def create_client(
        self, client_id: str, *, grant_types: Sequence[str], scope: Sequence[str] | None, public: bool
    ) -> tuple[Client, str | None]:
        self.require("chit:clients:write")
        if public and "client_credentials" in grant_types:
            raise RefusedError("a public client cannot use client_credentials: it has no secret to authenticate with")
        if not grant_types:
            raise RefusedError("a client needs at least one grant")
        unknown = sorted(set(grant_types) - KNOWN_GRANT_TYPES)
        if unknown:
            raise RefusedError(f"unknown grant {unknown[0]!r}; choose from {', '.join(sorted(KNOWN_GRANT_TYPES))}")
        if scope is not None:
            perms = parse_all(scope)
            self._check_defined(perms)
            self._may_grant(perms)
        secret = None if public else new_secret()
        client = self.server.store.create_client(
            client_id,
            secret_hash=None if secret is None else hash_secret(secret),
            grant_types=grant_types,
            scope=None if scope is None else sorted(set(scope)),
            now=self.server.now(),
        )
        self._audit("client.created", subject=client.id, client=client_id, grant_types=sorted(set(grant_types)))
        return client, secret

    # API keys ----------------------------------------------------------------------------------

    def create_api_key(self, owner: str, scope: Sequence[str], expires_in: int | None) -> CreatedApiKey:
        owner_id, described = self.principal_id(owner)
        if owner_id != self.actor.subject:
            self.require("chit:api-keys:write")
        if expires_in is not None and expires_in < 60:
            raise RefusedError("an API key lives at least 60 seconds")
        wanted = parse_all(scope)
        if not wanted:
            raise RefusedError("an API key needs at least one permission")
        held = self.owner_permissions(owner_id)
        beyond = sorted(str(p) for p in wanted if not any(h.covers(p) for h in held))
        if beyond:
            raise RefusedError(f"an API key cannot carry more than its owner holds: {' '.join(beyond)}")
        key_id = new_id("key_")
        secret = new_secret()
        now = self.server.now()
        record = self.server.store.create_api_key(
            key_id=key_id,
            owner_id=owner_id,
            secret_hash=hash_secret(secret),
            scope=sorted(str(p) for p in wanted),
            now=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        self._audit("api_key.created", subject=owner_id, key_id=key_id, owner=described, scope=sorted(record.scope))
        return CreatedApiKey(record, format_api_key(key_id, secret))

    def owner_permissions(self, owner_id: str) -> frozenset[Permission]:
        store = self.server.store
        held = parse_all(store.permissions_of(owner_id))
        client = store.client_by_pk(owner_id)
        if client is not None and client.scope:
            held = held | parse_all(client.scope)
        return intersect(held, None)

    def _own_or_admin(self, key_id: str) -> ApiKeyRecord:
        record = self.server.store.api_key(key_id)
        if record is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if record.owner_id != self.actor.subject:
            self.require("chit:api-keys:write")
        return record

    def revoke_api_key(self, key_id: str) -> bool:
        record = self._own_or_admin(key_id)
        revoked = self.server.store.revoke_api_key(key_id, self.server.now())
        if revoked:
            self._audit("api_key.revoked", subject=record.owner_id, key_id=key_id)
        return revoked

    def rotate_api_key(self, key_id: str) -> str:
        record = self._own_or_admin(key_id)
        secret = new_secret()
        self.server.store.rotate_api_key(key_id, hash_secret(secret))
        self._audit("api_key.rotated", subject=record.owner_id, key_id=key_id)
        return format_api_key(key_id, secret)

    def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        if owner is None:
            self.require("chit:api-keys:read")
            return self.server.store.api_keys()
        owner_id, _ = self.principal_id(owner)
        if owner_id != self.actor.subject:
            self.require("chit:api-keys:read")
        return self.server.store.api_keys(owner_id)

    # sessions and keys -------------------------------------------------------------------------

    def revoke_session(self, session_id: str) -> bool:
        sessions = {s.id: s for s in self.server.store.sessions()}
        session = sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"no session {session_id!r}")
        if session.user_id != self.actor.subject:
            self.require("chit:sessions:write")
        revoked = self.server.store.revoke_family(session_id, now=self.server.now(), reason="revoked")
        if revoked:
            self._audit("session.revoked", subject=session.user_id, session=session_id)
        return revoked

    def rotate_keys(self, alg: str | None, now: bool) -> dict[str, Any]:
        self.require("chit:keys:rotate")
        server = self.server
        current = server.keys().ring.signing_key(server.now_datetime())
        algorithm = check_algorithm(alg) if alg else current.alg
        # the server's max-age, not this process's: every cache must hold the key before it signs
        max_age = max(server.settings.jwks_max_age, server.keystore.jwks_max_age())
        delay = timedelta(0) if now else timedelta(seconds=max_age)
        key = server.keystore.rotate(algorithm, server.now_datetime(), delay=delay)
        server.keys(reload=True)  # published at once, in this process too
        self._audit("keys.rotated", kid=key.kid, alg=key.alg, immediate=now)
        return {"kid": key.kid, "alg": key.alg, "signs_from": key.signs_from.isoformat(), "previous_kid": current.kid}
