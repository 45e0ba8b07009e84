"""Authority follows the presenting token (DESIGN §4), as a property over random admin operations.

Random narrowed tokens (API keys of the super admin with random scopes, exchanged at the edge) send
random sequences of admin operations to a real ``chit serve``: API keys, clients, roles, grants,
users and service manifests. Whatever an operation creates must be no wider than the token that
created it: each permission it carries is held by the token, or administered by it (the admin of
its service, or ``chit:grants:write`` for service permissions), handing on a service admin
permission takes ``chit:admins:write``, and ``chit:*`` in a manifest takes ``chit:*:*``. The oracle
below is written from those words, not from chit's code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ChitServer, ModuleServers
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:chit:token-type:api-key"
SERVICES = {"image-store": ["images:read", "images:delete"], "payment": ["charges:create", "charges:read"]}
SERVICE_PERMISSIONS = [f"{s}:{p}" for s, perms in SERVICES.items() for p in perms] + ["image-store:images:*"]
CHIT_PERMISSIONS = [
    "chit:users:write",
    "chit:clients:write",
    "chit:roles:write",
    "chit:grants:write",
    "chit:admins:write",
    "chit:api-keys:write",
    "chit:services:admin",
    "chit:service.image-store:admin",
    "chit:service.payment:admin",
    "chit:users:read",
    "chit:*:*",
]
POOL = CHIT_PERMISSIONS + SERVICE_PERMISSIONS
# what the operations may try to hand on: the pool, minus wildcards a role or manifest cannot name
HANDED = [p for p in POOL if p != "image-store:images:*"]


def covers(held: str, wanted: str) -> bool:
    h, w = held.split(":"), wanted.split(":")
    return h[0] == w[0] and all(a in ("*", b) for a, b in zip(h[1:], w[1:], strict=True))


def carried(token: set[str], permission: str) -> bool:
    return any(covers(t, permission) for t in token)


def appoints(permission: str) -> bool:
    service, resource, action = permission.split(":")
    return service == "chit" and action in ("admin", "*") and (resource == "*" or resource.startswith("service."))


def administered(token: set[str], permission: str) -> bool:
    service = permission.split(":")[0]
    if service == "chit":
        return False
    return carried(token, "chit:grants:write") or carried(token, f"chit:service.{service}:admin")


def may_create_with(token: set[str], permission: str) -> bool:
    """A key, a client's scope, a role's permissions: held or administered."""
    if appoints(permission) and not carried(token, "chit:admins:write"):
        return False
    return carried(token, permission) or administered(token, permission)


def may_grant(token: set[str], permission: str) -> bool:
    """Handing a role to a principal: administered (chit:grants:write may grant any role)."""
    if carried(token, "chit:grants:write"):
        return True
    if appoints(permission):
        return False
    return administered(token, permission)


def may_list_in_manifest(token: set[str], permission: str) -> bool:
    if permission.startswith("chit:"):
        return carried(token, "chit:*:*")
    return may_create_with(token, permission)


@dataclass
class World:
    chit: ChitServer
    admin: str  # the super admin's access token
    gateway: tuple[str, str]
    roles: dict[str, list[str]]  # role name -> permissions, of roles that exist

    def call(self, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method, self.chit.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def narrowed_token(self, scope: list[str]) -> tuple[str, set[str]]:
        """An access token of the super admin carrying exactly ``scope``, via an API key at the edge."""
        r = self.call(self.admin, "POST", "/admin/api-keys", {"owner": "admin", "scope": scope})
        assert r.status_code == 201, r.text
        exchanged = httpx.post(
            self.chit.token_url,
            data={
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": r.json()["api_key"],
                "subject_token_type": API_KEY_TYPE,
            },
            auth=self.gateway,
            timeout=30,
        )
        assert exchanged.status_code == 200, exchanged.text
        granted = set(exchanged.json()["scope"].split())
        assert all(carried(granted, p) for p in scope)
        assert all(carried(set(scope), p) for p in granted)
        return exchanged.json()["access_token"], granted


def permission_options(permissions: Iterable[str]) -> list[str]:
    return [arg for p in permissions for arg in ("--permission", p)]


@pytest.fixture(scope="module")
def world(module_server: ModuleServers) -> World:
    chit = module_server("authority", services=SERVICES)
    chit.cli_ok("role", "create", "everything-of-services", *permission_options(f"{s}:*:*" for s in SERVICES))
    chit.cli_ok("grant", "user:admin", "everything-of-services")
    chit.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
    secret = chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"]
    chit.cli_ok("grant", "client:gateway", "edge")
    login = httpx.post(
        chit.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": "admin", "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    roles = {
        "chit:super-admin": ["chit:*:*"],
        "chit:service-admin.image-store": ["chit:service.image-store:admin"],
        "image-store:reader": ["image-store:images:read"],
        "payment:payer": ["payment:charges:create", "payment:charges:read"],
    }
    for name, perms in roles.items():
        if not name.startswith("chit:"):
            chit.cli_ok("role", "create", name.replace(":", "-"), *permission_options(perms))
    roles = {(n if n.startswith("chit:") else n.replace(":", "-")): p for n, p in roles.items()}
    chit.add_user("target", "target-password")
    return World(chit, login.json()["access_token"], ("gateway", secret), roles)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


permissions = st.lists(st.sampled_from(HANDED), min_size=1, max_size=3, unique=True)
operations = st.one_of(
    st.tuples(st.just("api_key"), permissions),
    st.tuples(st.just("client"), permissions),
    st.tuples(st.just("role"), permissions),
    st.tuples(st.just("grant"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("user"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("manifest"), permissions),
)


def attempt(world: World, token: str, held: set[str], operation: tuple[str, Any]) -> None:
    """Send one operation; if it succeeded, what it created must be within the token."""
    kind, argument = operation
    role_names = sorted(world.roles)
    if kind == "api_key":
        r = world.call(token, "POST", "/admin/api-keys", {"owner": "admin", "scope": argument})
        if r.status_code == 201:
            created = r.json()["scope"]
            assert set(created) == set(argument)
            assert all(may_create_with(held, p) for p in created), (held, created)
    elif kind == "client":
        r = world.call(token, "POST", "/admin/clients", {"client_id": unique("c"), "scope": argument})
        if r.status_code == 201:
            created = r.json()["scope"]
            assert set(created) == set(argument)
            assert all(may_create_with(held, p) for p in created), (held, created)
    elif kind == "role":
        name = unique("role")
        r = world.call(token, "POST", "/admin/roles", {"name": name, "permissions": argument})
        if r.status_code == 201:
            assert all(may_create_with(held, p) for p in argument), (held, argument)
            world.roles[name] = argument
    elif kind == "grant":
        role = role_names[argument % len(role_names)]
        r = world.call(token, "POST", "/admin/grants", {"principal": "user:target", "role": role})
        if r.status_code == 200:
            assert all(may_grant(held, p) for p in world.roles[role]), (held, role)
            world.call(world.admin, "POST", "/admin/grants/revoke", {"principal": "user:target", "role": role})
    elif kind == "user":
        role = role_names[argument % len(role_names)]
        body = {"username": unique("u"), "password": "a-long-password", "roles": [role]}
        r = world.call(token, "POST", "/admin/users", body)
        if r.status_code == 201:
            assert carried(held, "chit:users:write")
            assert all(may_grant(held, p) for p in world.roles[role]), (held, role)
    else:
        service = unique("svc")
        needs = [p for p in argument if not p.startswith("payment:")]
        on_behalf = [p for p in argument if p.startswith("payment:")]
        text = f'id = "{service}"\n\n[permissions]\n"x:read" = "Read x"\n\n[needs]\npermissions = {json.dumps(needs)}\n'
        text += f"\n[on_behalf]\npermissions = {json.dumps(on_behalf)}\n"
        r = world.call(token, "PUT", f"/admin/services/{service}", {"manifest": text})
        if r.status_code == 200:
            assert carried(held, "chit:services:admin")
            assert all(may_list_in_manifest(held, p) for p in argument), (held, argument)
    event(f"{kind}: {r.status_code}")
    if r.status_code == 401:  # a token of service permissions only is not meant for the auth server
        assert not any(p.startswith("chit:") for p in held), r.text
    elif r.status_code >= 400:
        assert r.status_code in (400, 403, 404, 409), r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scope=st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True), ops=st.lists(operations, max_size=4))
def test_nothing_created_is_wider_than_the_token_that_created_it(
    world: World, scope: list[str], ops: list[tuple[str, Any]]
) -> None:
    token, held = world.narrowed_token(scope)
    for operation in ops:
        attempt(world, token, held, operation)


def test_the_oracle_refuses_the_escalations_that_were_found() -> None:
    """The oracle itself is not vacuous: the reported escalations fail it."""
    assert not may_list_in_manifest({"chit:services:admin"}, "chit:*:*")
    assert not may_create_with({"chit:users:read"}, "chit:*:*")
    assert not may_create_with({"chit:grants:write"}, "chit:users:read")
    assert not may_grant({"chit:service.image-store:admin"}, "payment:charges:create")
    assert not may_create_with({"chit:service.image-store:admin"}, "chit:service.image-store:admin")
    assert may_create_with({"chit:service.image-store:admin"}, "image-store:images:delete")
    assert may_grant({"chit:grants:write"}, "chit:*:*")
