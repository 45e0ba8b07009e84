"""Service manifests: a service describes its permissions and roles in TOML, in its own repository.

Example (DESIGN §4)::

    id = "image-store"
    description = "Users' images"

    [permissions]                 # resource:action = description; full name image-store:images:read
    "images:read" = "Read an image and its metadata"

    [roles]                       # registered as image-store:viewer
    viewer = ["images:read"]

    [needs]                       # for the service's own account (client_credentials)
    permissions = ["tagging:tags:read"]

    [on_behalf]                   # what it may exercise for a user (exchange, chits)
    permissions = ["tagging:tags:write"]
    deferred = ["tagging:tags:write"]

Every error names the file, the line and the key it is about.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from chit.errors import InvalidPermissionError, RefusedError
from chit.policy.permissions import CHIT_SERVICE, WILDCARD, Permission, is_covered

SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,47}\Z")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
TOP_LEVEL = ("id", "description", "permissions", "roles", "needs", "on_behalf")
SECTION_KEYS = {"needs": ("permissions",), "on_behalf": ("permissions", "deferred")}
RESERVED_IDS = frozenset({CHIT_SERVICE})


class ManifestError(RefusedError):
    def __init__(self, source: str, line: int | None, key: str, problem: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {problem}")
        self.line = line
        self.key = key


@dataclass(frozen=True)
class Manifest:
    id: str
    description: str
    permissions: dict[str, str]  # full permission name -> description
    roles: dict[str, tuple[str, ...]]  # full role name (service:role) -> full permission names
    needs: tuple[str, ...]
    on_behalf: tuple[str, ...]
    deferred: tuple[str, ...]

    def canonical(self) -> str:
        """A stable JSON form: two manifests that mean the same have the same canonical form."""
        return json.dumps(
            {
                "id": self.id,
                "description": self.description,
                "permissions": self.permissions,
                "roles": {name: sorted(perms) for name, perms in self.roles.items()},
                "needs": sorted(self.needs),
                "on_behalf": sorted(self.on_behalf),
                "deferred": sorted(self.deferred),
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """The line where ``key`` is set, inside ``[section]`` (None: top level)."""
    current: str | None = None
    pattern = re.compile(r'\s*(?:"' + re.escape(key) + r'"|' + "'" + re.escape(key) + "'|" + re.escape(key) + r")\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip("\"'")
            if section is not None and current == section and key == "":
                return number
            continue
        if current == section and pattern.match(line):
            return number
    return None


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def error(self, section: str | None, key: str, problem: str) -> ManifestError:
        line = _line_of(self.text, section, key) if key else None
        if line is None and section is not None:
            line = _line_of(self.text, section, "")
        if line is None and section is not None:  # an inline table: `roles = { ... }` at the top level
            line = _line_of(self.text, None, section)
        label = f"{section}.{key}" if section and key else (section or key)
        return ManifestError(self.source, line, label, problem)

    def permission(self, section: str, key: str, value: Any, *, owner: str | None = None) -> str:
        if not isinstance(value, str):
            raise self.error(section, key, f"expected a permission name, found {type(value).__name__}")
        try:
            permission = Permission.parse(value)
        except InvalidPermissionError as exc:
            raise self.error(section, key, str(exc)) from None
        if owner is not None and permission.service == owner:
            raise self.error(section, key, f"{value!r} is this service's own permission; list it under [permissions]")
        return str(permission)

    def permission_list(self, section: str, key: str, value: Any, *, owner: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.error(section, key, "expected a list of permission names")
        return tuple(sorted({self.permission(section, key, v, owner=owner) for v in value}))


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))
        raise ManifestError(source, int(at.group(1)) if at else None, "toml", str(exc)) from None
    r = _Reader(text, source)
    for key in data:
        if key not in TOP_LEVEL:
            raise r.error(None, key, f"unknown key; a manifest has {', '.join(TOP_LEVEL)}")

    service_id = data.get("id")
    if not isinstance(service_id, str) or not SERVICE_ID.match(service_id):
        raise r.error(
            None, "id", "the service id is 1-48 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if service_id in RESERVED_IDS:
        raise r.error(None, "id", f"{service_id!r} is reserved for the auth server")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise r.error(None, "description", "expected a string")

    raw_permissions = data.get("permissions", {})
    if not isinstance(raw_permissions, dict):
        raise r.error(None, "permissions", "expected a table of resource:action = description")
    permissions: dict[str, str] = {}
    for short, text_description in raw_permissions.items():
        parts = short.split(":")
        if len(parts) != 2 or not all(NAME.match(p) for p in parts):
            raise r.error(
                "permissions", short, "expected resource:action, each 1-64 characters of a-z, 0-9, '.', '_', '-'"
            )
        if not isinstance(text_description, str) or not text_description.strip():
            raise r.error("permissions", short, "every permission needs a description")
        permissions[f"{service_id}:{short}"] = text_description.strip()

    raw_roles = data.get("roles", {})
    if not isinstance(raw_roles, dict):
        raise r.error(None, "roles", "expected a table of role = [permissions]")
    roles: dict[str, tuple[str, ...]] = {}
    for role, members in raw_roles.items():
        if not NAME.match(role):
            raise r.error("roles", role, "a role name is 1-64 characters of a-z, 0-9, '.', '_', '-'")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise r.error("roles", role, "expected a list of this service's permissions (resource:action)")
        full = set()
        for member in members:
            name = member if member.count(":") == 2 else f"{service_id}:{member}"
            if name not in permissions:
                if member.count(":") == 2 and not member.startswith(service_id + ":"):
                    raise r.error("roles", role, f"{member!r} belongs to another service; roles bundle their own")
                raise r.error("roles", role, f"{member!r} is not defined under [permissions]")
            full.add(name)
        roles[f"{service_id}:{role}"] = tuple(sorted(full))

    sections: dict[str, dict[str, Any]] = {}
    for section, allowed in SECTION_KEYS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise r.error(None, section, "expected a table")
        for key in raw:
            if key not in allowed:
                raise r.error(section, key, f"unknown key; [{section}] has {', '.join(allowed)}")
        sections[section] = raw
    needs = r.permission_list("needs", "permissions", sections["needs"].get("permissions", []), owner=service_id)
    on_behalf = r.permission_list("on_behalf", "permissions", sections["on_behalf"].get("permissions", []), owner="")
    deferred = r.permission_list("on_behalf", "deferred", sections["on_behalf"].get("deferred", []), owner="")
    held = [Permission.parse(p) for p in on_behalf]
    for name in deferred:
        if not is_covered(Permission.parse(name), held):
            raise r.error("on_behalf", "deferred", f"{name!r} is not among on_behalf.permissions")
    for name in (*needs, *on_behalf):
        if Permission.parse(name).service == service_id and name not in permissions and WILDCARD not in name:
            raise r.error("on_behalf", "permissions", f"{name!r} is not defined under [permissions]")
    return Manifest(service_id, description, permissions, roles, needs, on_behalf, deferred)
