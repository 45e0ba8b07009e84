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
    "chit:users:impersonate": "Act for any user without their token (a service's last resort; super admin only)",
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
    "chit:delegations:read": "List deferred delegations",
    "chit:delegations:write": "Revoke deferred delegations",
    "chit:revocations:read": "Follow the revocation feed (every registered service's client holds it)",
}


def perm(text: str) -> Permission:
    return Permission.parse(text)


GRANT_ANY = perm("chit:grants:write")
SUPER_ADMIN = Permission(CHIT_SERVICE, WILDCARD, WILDCARD)
APPOINT = perm("chit:admins:write")
EXCHANGE = perm("chit:api-keys:exchange")  # a client with it needs the grant below (the gateway)
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
IMPERSONATE = perm("chit:users:impersonate")  # handed on by the super admin alone
IMPERSONATE_ROLE = (
    "chit:users:impersonate"  # the built-in role that holds it: `chit grant client:ID chit:users:impersonate`
)


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
    super_admin = is_covered(SUPER_ADMIN, actor)
    for p in sorted(set(permissions)):
        if IMPERSONATE.covers(p) or (p.service == CHIT_SERVICE and p.covers(IMPERSONATE)):
            if not super_admin:  # acting as any user without their token: nobody below the top hands it on
                refused.append(str(p))
            continue
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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` with the closest of ``known`` to ``name`` (those about as close as the
    closest: ``owners`` suggests ``owner``, not ``viewer`` too), or ``""`` when none is close."""
    near = closest(name, known)
    if not near:
        return ""

    def ratio(candidate: str) -> float:
        return difflib.SequenceMatcher(None, name, candidate).ratio()

    best = ratio(near[0])
    return f"; did you mean {', '.join(n for n in near if ratio(n) >= best - 0.05)}?"


def chit_permissions(registered_services: Iterable[str] = ()) -> list[str]:
    """Every concrete ``chit:*`` permission: ``CHIT_PERMISSIONS`` and each registered service's admin one."""
    return [*CHIT_PERMISSIONS, *(str(service_admin_permission(s)) for s in sorted(set(registered_services)))]


def undefined_chit(p: Permission, registered_services: Iterable[str]) -> str | None:
    """Why a ``chit:*`` permission is not one of the auth server's (None: it is, or a wildcard over some).

    The set is fixed: ``CHIT_PERMISSIONS``, ``chit:service.S:admin`` for each registered ``S``, and
    wildcards that cover at least one of them (``chit:*:*``, ``chit:users:*``, ``chit:*:read``).
    """
    services = frozenset(registered_services)
    known = chit_permissions(services)
    if any(p.covers(perm(k)) for k in known):
        return None
    if p.resource.startswith("service.") and p.action in ("admin", WILDCARD):
        service = p.resource.removeprefix("service.")
        return f"{p}: no registered service {service!r}{did_you_mean(service, services)}"
    near = difflib.get_close_matches(str(p), known, n=1, cutoff=0.8)
    if near:
        return f"{p}: no such chit permission; did you mean {near[0]}?"
    resources = ", ".join(dict.fromkeys(perm(k).resource for k in CHIT_PERMISSIONS))
    return f"{p}: no such chit permission (chit:RESOURCE:ACTION, RESOURCE one of {resources}, service.ID)"


def undefined(
    permissions: Iterable[Permission], defined: Iterable[str], registered_services: Iterable[str]
) -> list[str]:
    """Why each permission that no registered service defines (or, for ``chit:*``, that is not one of
    the auth server's own, see ``undefined_chit``) cannot be granted."""
    defined_set = frozenset(defined)
    defined_perms = [perm(d) for d in defined_set]
    services = frozenset(registered_services)
    problems = []
    for p in sorted(set(permissions)):
        if p.service == CHIT_SERVICE:
            problem = undefined_chit(p, services)
            if problem:
                problems.append(problem)
            continue
        if p.service not in services:
            problems.append(f"{p}: no registered service {p.service!r}{did_you_mean(p.service, services)}")
        elif not any(p.covers(d) or d.covers(p) for d in defined_perms if d.service == p.service):
            problems.append(f"{p}: service {p.service!r} defines no such permission{did_you_mean(str(p), defined_set)}")
    return problems
