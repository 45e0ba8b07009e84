"""Administrative operations, shared by the CLI and the admin API.

Authority follows the presenting token (DESIGN §4): each operation checks what the *token* carries
(``Caller.permissions``), never what its owner holds in the database, and whatever it creates is
bounded by that (``chit.policy.administration``). It validates its input (no text argument holds a
control character, ``chit.policy.text``), writes in one transaction and leaves an audit event; a
refusal leaves one too (``admin.refused``, outcome ``failure``). A caller who may not read a user,
client, key, session or delegation is never told whether it exists. The CLI acts as the *operator*:
whoever can read the data directory already holds every key, so it acts with ``chit:*:*``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from chit.core.keys import check_algorithm
from chit.core.service_keys import ServiceKeyPair, check_public_key, new_key_pair, public_half
from chit.errors import ChitError, ConfigurationError, ConflictError, NotFoundError, RefusedError
from chit.errors import ForbiddenError as ForbiddenError  # its home before chit.errors
from chit.policy import administration as rules
from chit.policy.manifest import Manifest
from chit.policy.permissions import CHIT_SERVICE, Permission, intersect, parse_all
from chit.policy.text import texts_problem
from chit.server.audit import FAILURE, AuditEvent
from chit.server.authserver import AuthServer
from chit.server.credentials import check_new_password, format_api_key, hash_password, hash_secret, new_secret
from chit.server.endpoints.token import KNOWN_GRANT_TYPES
from chit.storage.records import (
    API_KEY_PREFIX,
    ApiKeyRecord,
    AuditRecord,
    Client,
    DelegationRecord,
    Registration,
    ServiceRecord,
    SessionRecord,
    User,
    new_id,
)
from chit.storage.service_keyfiles import ServiceKeyFiles

OPERATOR_SUBJECT = "operator"
REFUSED = "admin.refused"
# never in a refusal's audit event; a refused public key may be a private one pasted by mistake
_SECRET_ARGUMENTS = frozenset({"password", "public_key"})
_FREE_TEXT_ARGUMENTS = frozenset({"description"})  # may break lines; NUL is refused all the same

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Caller:
    """Who calls an administrative operation, with what the presented token carries (the CLI: the operator)."""

    subject: str
    permissions: frozenset[Permission]
    client_id: str | None = None
    source: str | None = None
    request_id: str | None = None
    chain: tuple[str, ...] = ()  # the services acting for the subject with a delegated token, current first

    @property
    def actors(self) -> tuple[str, ...]:
        """Who an audit event names: the subject, then every service of the chain its token was delegated to."""
        return (self.subject, *self.chain)

    @classmethod
    def operator(cls) -> Caller:
        return cls(OPERATOR_SUBJECT, frozenset({rules.SUPER_ADMIN}), source="cli")


@dataclass(frozen=True)
class RegisteredService:
    outcome: Registration
    client_secret: str | None  # shown once, when its client was created now
    public_key: str | None  # its service key now
    private_key_waiting: bool  # the private half waits in the data directory for `chit service key`


@dataclass(frozen=True)
class CreatedApiKey:
    record: ApiKeyRecord
    secret: str  # shown once


def _described(value: Any) -> Any:
    """An argument as the audit log keeps it: plain, short, never a secret."""
    if isinstance(value, Manifest):
        return value.id
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted(str(v)[:200] for v in value)[:100]
    if value is None or isinstance(value, (bool, int)):
        return value
    return str(value)[:200]


def _check_text(arguments: Mapping[str, Any]) -> None:
    """Refuse a text argument holding a control character (a description: NUL), whoever calls: the
    admin API refuses them first, saying where; the CLI and any other caller meet them here."""
    for name, value in arguments.items():
        if isinstance(value, Mapping):
            values: Iterable[Any] = value.values()
        else:
            values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        problem = texts_problem(values, free_text=name in _FREE_TEXT_ARGUMENTS)
        if problem:
            raise RefusedError(f"{name} {problem}")


def delegation_state(record: DelegationRecord, user: User | None, now: int) -> str:
    """``active``, ``revoked`` or ``expired``; revoking everything of its user revokes it too."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at <= now:
        return "expired"
    if user is None or user.disabled or record.created_at < user.revoked_before:
        return "revoked"
    return "active"


def audited(operation: str) -> Callable[[Callable[Concatenate[Administration, P], R]], Callable[..., R]]:
    """Record a refusal of ``operation`` (outcome ``failure``: who, what was attempted, why), then re-raise."""

    def wrap(method: Callable[Concatenate[Administration, P], R]) -> Callable[..., R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def run(self: Administration, *args: P.args, **kwargs: P.kwargs) -> R:
            arguments = dict(list(signature.bind(self, *args, **kwargs).arguments.items())[1:])
            try:
                _check_text(arguments)
                return method(self, *args, **kwargs)
            except ChitError as exc:
                attempted = {k: _described(v) for k, v in arguments.items() if k not in _SECRET_ARGUMENTS}
                self.refused(operation, exc, attempted)
                raise

        return run

    return wrap


@dataclass
class Administration:
    server: AuthServer
    actor: Caller
    _events: list[AuditEvent] = field(default_factory=list)

    # the authority rule ------------------------------------------------------------------------

    def holds(self, permission: str | Permission) -> bool:
        return rules.holds(self.actor.permissions, permission)

    def require(self, permission: str) -> None:
        if not self.holds(permission):
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

    def _audit(self, type: str, *, subject: str | None = None, outcome: str = "success", **detail: Any) -> None:
        self.server.audit.record(
            AuditEvent(
                type,
                outcome,
                client_id=self.actor.client_id,
                subject=subject,
                actors=self.actor.actors,
                source=self.actor.source,
                request_id=self.actor.request_id,
                detail=detail,
            )
        )

    def refused(self, operation: str, exc: Exception, attempted: dict[str, Any]) -> None:
        """Audit a refusal; the error is marked so that the HTTP layer does not record it twice."""
        if getattr(exc, "audited", False):
            return
        self._audit(REFUSED, outcome=FAILURE, operation=operation, reason=str(exc)[:500], **attempted)
        exc.audited = True  # type: ignore[attr-defined]

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

    def _principal_unless_self(self, principal: str, permission: str) -> tuple[str, str]:
        """Resolve ``principal``; anyone else than the caller takes ``permission``, and a caller
        without it gets the same refusal whether or not the principal exists."""
        try:
            found = self.principal_id(principal)
        except NotFoundError:
            self.require(permission)
            raise
        if found[0] != self.actor.subject:
            self.require(permission)
        return found

    def _role_permissions(self, role: str) -> frozenset[Permission]:
        """A role's permissions, once the caller may grant it (else a refusal that tells nothing of it)."""
        store = self.server.store
        try:
            permissions = parse_all(store.role_permissions(role))
        except NotFoundError as exc:
            if self._may_see_role(role):
                raise NotFoundError(f"{exc}{self._role_hint(role)}") from None
            raise ForbiddenError(f"the token may not grant {role!r}") from None
        if rules.ungrantable(self.actor.permissions, permissions, holding_suffices=False):
            if self._may_see_role(role, permissions):
                self._may_grant(permissions, holding_suffices=False)
            raise ForbiddenError(f"the token may not grant {role!r}")
        return permissions

    def _role_hint(self, role: str) -> str:
        """``"; did you mean ...?"`` with the closest names among the roles this caller may see."""
        visible = [r["name"] for r in self.server.store.roles() if self._may_see_role(r["name"])]
        return rules.did_you_mean(role, visible)

    def _may_see_role(self, role: str, permissions: frozenset[Permission] = frozenset()) -> bool:
        """Whether a refusal may name what a role holds: to one who may read roles, administers the
        role's service, or holds all of it already."""
        service = role.split(":", 1)[0]
        if self.holds("chit:roles:read") or (permissions and all(self.holds(p) for p in permissions)):
            return True
        return service != "chit" and self.holds(rules.service_admin_permission(service))

    # services ----------------------------------------------------------------------------------

    @audited("service.register")
    def register_service(self, manifest: Manifest, public_key: str | None = None) -> RegisteredService:
        """Register or update a service; one without a key gets ``public_key``, else a new pair whose
        private half waits in the data directory to be handed over once (DESIGN §4, Service keys)."""
        self.require("chit:services:admin")
        store = self.server.store
        supplied = None if public_key is None else check_public_key(public_key)
        # registering a new service needs chit:services:admin; changing a registered one (its roles, which its
        # grantees hold, its key, which others trust) also takes administering it, decided in the transaction
        administers = self.holds(rules.service_admin_permission(manifest.id))
        listed = parse_all([*manifest.needs, *manifest.on_behalf, *manifest.deferred])
        beyond = rules.unmanifestable(self.actor.permissions, listed)
        if beyond:
            raise ForbiddenError(
                "[needs] and [on_behalf] may list only what the token carries or administers"
                f" (chit:* ones take chit:*:*): {' '.join(beyond)}"
            )
        registered = [s.id for s in store.services() if s.id != manifest.id]
        # Services register in any order: what names a service not registered yet waits for it;
        # what names a registered one, or chit itself, must exist (a typo must not grant nothing).
        named = [p for p in listed if p.service in registered or p.service == CHIT_SERVICE]
        problems = rules.undefined(named, store.defined_permissions(), registered)
        if problems:
            raise RefusedError("; ".join(problems))
        secret = new_secret()
        admin_role = (rules.service_admin_role(manifest.id), str(rules.service_admin_permission(manifest.id)))
        existing = store.service(manifest.id)
        pair = new_key_pair() if supplied is None and (existing is None or existing.public_key is None) else None
        files = self._service_key_files()
        # staged before the commit and put in place after it: a registration that fails leaves no key file
        staged = None if pair is None else files.stage(manifest.id, pair.private_key)
        try:
            outcome = store.register_service(
                manifest,
                admin_role=admin_role,
                secret_hash=hash_secret(secret),
                now=self.server.now(),
                public_key=supplied or (None if pair is None else pair.public_key),
                replace_key=supplied is not None,
                may_change=administers,
            )
        except BaseException:
            if staged is not None:
                files.discard(staged)
            raise
        if staged is not None:
            if outcome.key_set:
                files.place(staged, manifest.id)
            else:
                files.discard(staged)
        elif outcome.key_set:
            files.remove(manifest.id)  # a generated private key still waiting would match nothing now
        if outcome.changed:
            self._audit("service.registered", service=manifest.id, created=outcome.created)
        record = store.service(manifest.id)
        current = None if record is None else record.public_key
        if outcome.key_set:
            self._audit_key(manifest.id, current, outcome.replaced_key, "supplied" if supplied else "generated")
            self._revoke_service_key(outcome.replaced_key)
        return RegisteredService(
            outcome,
            secret if outcome.client_created else None,
            current,
            files.waiting(manifest.id),
        )

    def _service_key_files(self) -> ServiceKeyFiles:
        return ServiceKeyFiles(self.server.settings.data_dir)

    def _audit_key(self, service_id: str, public_key: str | None, previous: str | None, source: str) -> None:
        """``service.key_created`` or ``service.key_rotated``: public halves only, never a private one."""
        if previous is None:
            self._audit("service.key_created", service=service_id, public_key=public_key, source=source)
        else:
            self._audit(
                "service.key_rotated",
                service=service_id,
                public_key=public_key,
                previous_public_key=previous,
                source=source,
            )

    def _revoke_service_key(self, public_key: str | None) -> None:
        """A replaced service key proves nothing from now on: a ``key`` event naming it (``ed25519/<hex>``) tells
        every service at once, where a key leaked would otherwise prove ``through`` until caches age."""
        if public_key is not None:
            self.server.revocations.revoke_signing_key(public_key, not_before=self.server.now() + 1)

    def _require_service_admin(self, service_id: str) -> None:
        """What acts on a registered service (its key, its removal) takes chit:services:admin and administering
        that service: its private key signs what others trust as the service's."""
        self.require("chit:services:admin")
        self.require(str(rules.service_admin_permission(service_id)))

    def _registered(self, service_id: str) -> ServiceRecord:
        record = self.server.store.service(service_id)
        if record is None:
            raise NotFoundError(f"no registered service {service_id!r}")
        return record

    @audited("service.key_hand_over")
    def hand_over_service_key(self, service_id: str) -> ServiceKeyPair:
        """The private key that registration left in the data directory, deleted as it is handed over."""
        self._require_service_admin(service_id)
        record = self._registered(service_id)
        rotate = f"rotate with `chit service key {service_id} --rotate`"
        if record.public_key is None:
            raise RefusedError(
                f"service {service_id!r} has no key yet; create one with `chit service key {service_id} --rotate`"
            )
        private = self._service_key_files().take(service_id)
        if private is None:
            raise RefusedError(
                f"the private key of service {service_id!r} was handed over already"
                f" (or the service supplied its own); {rotate}"
            )
        try:
            matches = public_half(private) == record.public_key
        except ConfigurationError:
            matches = False
        if not matches:
            raise RefusedError(
                f"the private key waiting for service {service_id!r} does not match its published key"
                f" and is deleted; {rotate}"
            )
        self._audit("service.key_handed_over", service=service_id, public_key=record.public_key)
        return ServiceKeyPair(record.public_key, private)

    @audited("service.key_rotate")
    def rotate_service_key(self, service_id: str) -> ServiceKeyPair:
        """A new pair for the service: its public half replaces the published key, its private half is
        handed over at once (nothing is left in the data directory)."""
        self._require_service_admin(service_id)
        record = self._registered(service_id)
        pair = new_key_pair()
        if not self.server.store.set_service_public_key(service_id, pair.public_key, replacing=record.public_key):
            raise ConflictError(f"the key of service {service_id!r} changed meanwhile; retry")
        self._service_key_files().remove(service_id)  # the old private half, if it still waited, matches nothing
        self._audit_key(service_id, pair.public_key, record.public_key, "generated")
        self._revoke_service_key(record.public_key)
        self._audit("service.key_handed_over", service=service_id, public_key=pair.public_key)
        return pair

    @audited("service.remove")
    def remove_service(self, service_id: str) -> None:
        self._require_service_admin(service_id)
        client_pk = self.server.revocations.remove_service(service_id)  # and every token of its client
        self._service_key_files().remove(service_id)
        self._audit("service.removed", subject=client_pk, service=service_id)

    @audited("service.list")
    def services(self) -> list[ServiceRecord]:
        self.require("chit:services:read")
        return self.server.store.services()

    # roles and grants --------------------------------------------------------------------------

    @audited("role.create")
    def create_role(self, name: str, permissions: Sequence[str], description: str = "") -> None:
        self.require("chit:roles:write")
        perms = parse_all(permissions)
        if not perms:
            raise RefusedError("a role needs at least one permission")
        if ":" in name:
            # <service>:<role> and chit:service-admin.<service> are made by registering that service, registered
            # yet or not: a role taking such a name first would block its registration
            raise RefusedError(f"role names with ':' belong to a service's manifest (<service>:<role>): {name!r}")
        self._check_defined(perms)
        self._may_grant(perms)
        self.server.store.create_role(name, sorted(str(p) for p in perms), self.server.now(), description)
        self._audit("role.created", role=name, permissions=sorted(str(p) for p in perms))

    @audited("role.list")
    def roles(self) -> list[dict[str, Any]]:
        self.require("chit:roles:read")
        return self.server.store.roles()

    @audited("grant.add")
    def grant(self, principal: str, role: str) -> bool:
        self._role_permissions(role)
        principal_id, described = self.principal_id(principal)
        added = self.server.store.grant(principal_id, role, self.server.now())
        if added:
            self._audit("grant.added", subject=principal_id, principal=described, role=role)
        return added

    @audited("grant.revoke")
    def revoke_grant(self, principal: str, role: str) -> bool:
        self._role_permissions(role)
        principal_id, described = self.principal_id(principal)
        removed = self.server.store.revoke_grant(principal_id, role)
        if removed:
            self._audit("grant.revoked", subject=principal_id, principal=described, role=role)
        return removed

    @audited("grant.list")
    def grants(self) -> list[tuple[str, str]]:
        self.require("chit:grants:read")
        return self.server.store.grants()

    @audited("admin.appoint")
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

    @audited("user.create")
    def create_user(self, username: str, password: str, roles: Sequence[str] = ()) -> User:
        self.require("chit:users:write")
        problem = check_new_password(password)
        if problem:
            raise RefusedError(problem)
        for role in roles:
            self._role_permissions(role)
        user = self.server.store.create_user(username, hash_password(password), self.server.now(), roles=roles)
        self._audit("user.created", subject=user.id, username=username, roles=sorted(set(roles)))
        return user

    @audited("user.list")
    def users(self) -> list[User]:
        self.require("chit:users:read")
        return self.server.store.users()

    @audited("user.disable")
    def set_user_disabled(self, username: str, disabled: bool) -> User:
        self.require("chit:users:write")
        store = self.server.store
        user = store.user_by_username(username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        # a token may not lock out (or bring back) someone who holds more than it could hand out
        self._may_grant(parse_all(store.permissions_of(user.id)))
        user, _ = self.server.revocations.set_user_disabled(username, disabled, by=self.actor)
        return user

    @audited("client.create")
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
            if rules.EXCHANGE in perms and rules.TOKEN_EXCHANGE_GRANT not in grant_types:
                raise RefusedError(
                    f"{rules.EXCHANGE} lets a client exchange API keys, which takes the token-exchange grant:"
                    f" add --grant {rules.TOKEN_EXCHANGE_GRANT}"
                )
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

    @audited("client.list")
    def clients(self) -> list[Client]:
        self.require("chit:clients:read")
        return self.server.store.clients()

    # API keys ----------------------------------------------------------------------------------

    @audited("api_key.create")
    def create_api_key(self, owner: str, scope: Sequence[str], expires_in: int | None) -> CreatedApiKey:
        owner_id, described = self._principal_unless_self(owner, "chit:api-keys:write")
        if expires_in is not None and expires_in < 60:
            raise RefusedError("an API key lives at least 60 seconds")
        wanted = parse_all(scope)
        if not wanted:
            raise RefusedError("an API key needs at least one permission")
        self._check_defined(wanted)  # a typo gets its closest names, not "more than its owner holds"
        self._may_grant(wanted)
        held = self.owner_permissions(owner_id)
        beyond = sorted(str(p) for p in wanted if not any(h.covers(p) for h in held))
        if beyond:
            raise RefusedError(f"an API key cannot carry more than its owner holds: {' '.join(beyond)}")
        key_id = new_id(API_KEY_PREFIX)
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

    def _could_create(self, record: ApiKeyRecord) -> bool:
        """Whether this token could have created the key: managing a key takes no less."""
        if record.owner_id != self.actor.subject and not self.holds("chit:api-keys:write"):
            return False
        return not rules.ungrantable(self.actor.permissions, parse_all(record.scope))

    def _manageable_key(self, key_id: str) -> ApiKeyRecord:
        record = self.server.store.api_key(key_id)
        if record is None or not self._could_create(record):
            # the same answer for a key that does not exist and one this token may not touch
            raise NotFoundError(f"no API key {key_id!r} that this token could manage")
        return record

    @audited("api_key.revoke")
    def revoke_api_key(self, key_id: str) -> bool:
        record = self._manageable_key(key_id)
        return self.server.revocations.revoke_api_key(key_id, subject=record.owner_id, by=self.actor)

    @audited("api_key.rotate")
    def rotate_api_key(self, key_id: str) -> str:
        record = self._manageable_key(key_id)
        secret = new_secret()
        self.server.store.rotate_api_key(key_id, hash_secret(secret))
        self._audit("api_key.rotated", subject=record.owner_id, key_id=key_id)
        return format_api_key(key_id, secret)

    @audited("api_key.list")
    def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        if owner is None:
            self.require("chit:api-keys:read")
            records = self.server.store.api_keys()
        else:
            owner_id, _ = self._principal_unless_self(owner, "chit:api-keys:read")
            records = self.server.store.api_keys(owner_id)
        if self.holds("chit:api-keys:read"):
            return records
        # one's own keys, as far as this token could have created them
        return [r for r in records if self._could_create(r)]

    # deferred delegations ----------------------------------------------------------------------

    @audited("delegation.list")
    def delegations(self, username: str | None = None) -> list[DelegationRecord]:
        self.require("chit:delegations:read")  # before the lookup: a user's existence is told only to a reader
        store = self.server.store
        if username is None:
            return store.delegations()
        user = store.user_by_username(username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        return store.delegations(user.id)

    @audited("delegation.revoke")
    def revoke_delegation(self, delegation_id: str) -> bool:
        self.require("chit:delegations:write")
        record = self.server.store.delegation(delegation_id)
        if record is None:
            self.require("chit:delegations:read")  # whether it exists is told only to one who may read it
            raise NotFoundError(f"no delegation {delegation_id!r}")
        return self.server.revocations.revoke_delegation(delegation_id, subject=record.subject_id, by=self.actor)

    # sessions and keys -------------------------------------------------------------------------

    @audited("session.list")
    def sessions(self, user_id: str | None = None) -> list[SessionRecord]:
        self.require("chit:sessions:read")
        return self.server.store.sessions(user_id)

    @audited("session.revoke")
    def revoke_session(self, session_id: str) -> bool:
        session = self.server.store.session(session_id)
        if session is None or (session.user_id != self.actor.subject and not self.holds("chit:sessions:write")):
            raise NotFoundError(f"no session {session_id!r} that this token could revoke")
        return self.server.revocations.revoke_session(session_id, subject=session.user_id, by=self.actor)

    @audited("user.logout")
    def logout_everywhere(self, username: str) -> tuple[User, list[str]]:
        """Revoke everything issued to a user until now, leaving the account enabled (a stolen device,
        a changed password): the user and the ids of the sessions this ended. ``Revocations`` records
        the success (``user.logged_out``); only a refusal is recorded here."""
        self.require("chit:sessions:write")
        store = self.server.store
        user = store.user_by_username(username)
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        # their API keys and deferred delegations go too: a token may not end those of someone who
        # holds more than it could hand out, as for disabling
        self._may_grant(parse_all(store.permissions_of(user.id)))
        return self.server.revocations.logout_everywhere(username, by=self.actor)

    @audited("keys.list")
    def signing_keys(self) -> list[dict[str, Any]]:
        self.require("chit:keys:read")
        server = self.server
        return [
            {"kid": k.kid, "alg": k.alg, "signs_from": k.signs_from.isoformat()}
            for k in server.keys().ring.published(server.now_datetime())
        ]

    @audited("keys.rotate")
    def rotate_keys(self, alg: str | None, now: bool, revoke_old: bool = False) -> dict[str, Any]:
        """Rotate the signing key and the chit root key. ``revoke_old`` is for a key compromise: the new
        keys sign at once and every earlier key leaves the key set, so this server refuses what they
        signed, and one ``key`` event each tells every service to refuse it too (not waiting for their
        JWKS to expire)."""
        self.require("chit:keys:rotate")
        if revoke_old and not now:
            raise RefusedError("revoking the old keys takes an immediate rotation (--now): nothing else could sign")
        server = self.server
        current = server.keys().ring.signing_key(server.now_datetime())
        algorithm = check_algorithm(alg) if alg else current.alg
        # the server's max-age, not this process's: every cache must hold the key before it signs
        max_age = max(server.settings.jwks_max_age, server.keystore.jwks_max_age())
        delay = timedelta(0) if now else timedelta(seconds=max_age)
        rotation = server.keystore.rotate(algorithm, server.now_datetime(), delay=delay, retire_previous=revoke_old)
        server.keys(reload=True)  # published at once, in this process too
        key, root_key = rotation.signing_key, rotation.root_key
        # the keys no longer sign here before services are told: the feed's values, JWT kids then root-<id>
        revoked = [k.kid for k in rotation.retired_keys] + [k.revocation_value for k in rotation.retired_root_keys]
        not_before = server.now() + 1  # whole seconds: what they signed in this second goes too
        for value in revoked:
            server.revocations.revoke_signing_key(value, not_before=not_before)
        detail: dict[str, Any] = {"revoked": revoked} if revoke_old else {}
        self._audit("keys.rotated", kid=key.kid, alg=key.alg, immediate=now, biscuit_root_key_id=root_key.id, **detail)
        data = {
            "kid": key.kid,
            "alg": key.alg,
            "signs_from": key.signs_from.isoformat(),
            "previous_kid": current.kid,
            "biscuit_root_key_id": root_key.id,
            "biscuit_public_key": root_key.public_key,
        }
        return {**data, **detail}

    # audit -------------------------------------------------------------------------------------

    @audited("audit.read")
    def audit_events(
        self, *, after: int, limit: int, filters: dict[str, str], since: int | None, until: int | None
    ) -> list[AuditRecord]:
        self.require("chit:audit:read")
        return self.server.store.audit_events(after_seq=after, limit=limit, filters=filters, since=since, until=until)
