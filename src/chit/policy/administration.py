"""Who may change who may do what: the rules of delegated administration, without I/O.

* The auth server's own permissions are ``chit:<resource>:<action>`` (listed in ``CHIT_PERMISSIONS``);
  the super admin holds ``chit:*:*``.
* A *service admin* of ``S`` holds ``chit:service.S:admin`` (through the role
  ``chit:service-admin.S``, created when ``S`` registers) and may grant and revoke ``S``'s
  permissions and nothing else.
* ``actor`` below is always what the *presented token* carries, never what its owner holds.
* Nobody grants a role unless they administer every permission in it (a service admin of its
  service), except holders of ``chit:grants:write`` (the super admin), who may grant any role;
  nobody creates an API key, a client or a role with a permission they neither hold nor administer
  (``chit:grants:write`` administers every service's permissions, never ``chit:*`` ones), and a
  manifest's ``[needs]``/``[on_behalf]`` follow the same rule, ``chit:*`` in them taking ``chit:*:*``:
  there is no other way up.
* Granting a service admin permission is appointing a service admin: it takes ``chit:admins:write``,
  even for a service admin who holds that permission.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from chit.policy.permissions import CHIT_SERVICE, WILDCARD, Permission, is_covered

CHIT_PERMISSIONS: Mapping[str, str] = {
    "chit:users:read": "List users",
    "chit:users:write": "Create, disable and enable users",
    "chit:clients:read": "List clients",
    "chit:clients:write": "Create clients",
    "chit:services:read": "List registered services",
    "chit:services:admin": "Register and update services",
    "chit:roles:read": "List roles",
    "chit:roles:write": "Create global roles",
    "chit:grants:read": "List grants",
    "chit:grants:write": "Grant and revoke any role",
    "chit:admins:write": "Appoint service admins",
    "chit:api-keys:read": "List every API key",
    "chit:api-keys:write": "Create, rotate and revoke API keys for anyone",
    "chit:api-keys:exchange": "Exchange API keys for access tokens (the gateway)",
    "chit:sessions:read": "List sessions (refresh-token families)",
    "chit:sessions:write": "Revoke sessions",
    "chit:keys:read": "List signing keys",
    "chit:keys:rotate": "Rotate signing keys",
    "chit:audit:read": "Read the audit log",
}


def perm(text: str) -> Permission:
    return Permission.parse(text)


GRANT_ANY = perm("chit:grants:write")
SUPER_ADMIN = Permission(CHIT_SERVICE, WILDCARD, WILDCARD)
APPOINT = perm("chit:admins:write")


def service_admin_permission(service_id: str) -> Permission:
    return Permission(CHIT_SERVICE, f"service.{service_id}", "admin")


def service_admin_role(service_id: str) -> str:
    return f"{CHIT_SERVICE}:service-admin.{service_id}"


def holds(actor: Iterable[Permission], needed: str | Permission) -> bool:
    return is_covered(needed if isinstance(needed, Permission) else perm(needed), frozenset(actor))


def appoints(p: Permission) -> bool:
    """Whether holding ``p`` makes one a service admin (``chit:service.S:admin`` or a wildcard over it)."""
    return (
        p.service == CHIT_SERVICE
        and p.action in ("admin", WILDCARD)
        and (p.resource == WILDCARD or p.resource.startswith("service."))
    )


def ungrantable(
    actor: Iterable[Permission], permissions: Iterable[Permission], *, holding_suffices: bool = True
) -> list[str]:
    """The permissions ``actor`` (what the presented token carries) may not hand on (empty: all allowed).

    Creating something that carries a permission (an API key, a client's scope, a role's
    permissions; ``holding_suffices=True``) takes holding it, or administering it as the admin of
    its service (``chit:grants:write`` administers every service's permissions, never ``chit:*``);
    granting a role that holds it to a principal (``holding_suffices=False``) takes administering it.
    Either way, handing on a service admin permission takes ``chit:admins:write``.
    """
    actor = frozenset(actor)
    grant_any = is_covered(GRANT_ANY, actor)
    refused = []
    for p in sorted(set(permissions)):
        if appoints(p) and not (is_covered(APPOINT, actor) or (grant_any and not holding_suffices)):
            refused.append(str(p))
            continue
        if holding_suffices and is_covered(p, actor):
            continue
        if grant_any and (p.service != CHIT_SERVICE or not holding_suffices):
            continue
        if p.service != CHIT_SERVICE and is_covered(service_admin_permission(p.service), actor):
            continue
        refused.append(str(p))
    return refused


def unmanifestable(actor: Iterable[Permission], permissions: Iterable[Permission]) -> list[str]:
    """What a manifest's ``[needs]``/``[on_behalf]`` may not list when registered by ``actor``.

    Each must be held or administered (as for a client's scope); ``chit:*`` ones take ``chit:*:*``,
    since a service account's needs are handed out by every registration to come.
    """
    actor = frozenset(actor)
    everything = is_covered(SUPER_ADMIN, actor)
    chit = sorted(str(p) for p in set(permissions) if p.service == CHIT_SERVICE and not everything)
    others = [p for p in permissions if p.service != CHIT_SERVICE]
    return sorted(set(chit) | set(ungrantable(actor, others)))


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


def undefined(
    permissions: Iterable[Permission], defined: Iterable[str], registered_services: Iterable[str]
) -> list[str]:
    """Why each permission that no registered service defines cannot be granted (``chit:*`` always is)."""
    defined_set = frozenset(defined)
    defined_perms = [perm(d) for d in defined_set]
    services = frozenset(registered_services)
    problems = []
    for p in sorted(set(permissions)):
        if p.service == CHIT_SERVICE:
            continue
        if p.service not in services:
            near = closest(p.service, services)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            problems.append(f"{p}: no registered service {p.service!r}{hint}")
        elif not any(p.covers(d) or d.covers(p) for d in defined_perms if d.service == p.service):
            near = closest(str(p), defined_set)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            problems.append(f"{p}: service {p.service!r} defines no such permission{hint}")
    return problems
