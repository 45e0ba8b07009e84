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

A manifest comes from outside (a file, or the admin API's request body), so it is parsed with bounds
(issue 12): at most ``MAX_CHARS`` characters, nested at most ``MAX_DEPTH`` levels (checked by a small
scanner *before* tomllib, which recurses once per level), and at most ``MAX_PERMISSIONS``
permissions, ``MAX_ROLES`` roles and ``MAX_LIST`` entries in a list. Whatever tomllib or a value of
the wrong type does, ``parse_manifest`` returns a ``Manifest`` or raises ``ManifestError``, whose
message is one line.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chit.errors import InvalidPermissionError, RefusedError
from chit.policy.permissions import CHIT_SERVICE, WILDCARD, Permission, is_covered
from chit.policy.text import NUL_PROBLEM, text_problem

SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,47}\Z")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
TOP_LEVEL = ("id", "description", "permissions", "roles", "needs", "on_behalf")
SECTION_KEYS = {"needs": ("permissions",), "on_behalf": ("permissions", "deferred")}
RESERVED_IDS = frozenset({CHIT_SERVICE})

MAX_CHARS = 60_000  # as the admin API's request body (chit.server.admin.models.ServiceManifest)
MAX_DEPTH = 8  # open [ and { plus the dots of a dotted key; a real manifest needs 2 or 3
MAX_PERMISSIONS = 500  # under [permissions]
MAX_ROLES = 100  # under [roles]
MAX_ROLE_MEMBERS = MAX_PERMISSIONS  # a role bundles the service's own permissions: all of them at most
MAX_LIST = 100  # needs.permissions, on_behalf.permissions, on_behalf.deferred
MAX_DESCRIPTION = 1000  # characters of a description (the service's or a permission's)
MAX_PERMISSION_NAME = 3 * 64 + 2  # service:resource:action, each segment at most 64 characters
_SHOWN = 80  # characters of a key or value quoted in a message


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


def _shown(text: str) -> str:
    """A key as it appears in a message: itself when short and printable, else quoted and cut."""
    if len(text) <= _SHOWN:
        return text if text.isprintable() and text.strip() == text and text else repr(text)
    return f"{text[:_SHOWN]!r}... ({len(text)} characters)"


def _quoted(text: str) -> str:
    """A value quoted in a message: its repr (one line), cut when long."""
    return repr(text) if len(text) <= _SHOWN else f"{text[:_SHOWN]!r}... ({len(text)} characters)"


def _kind(value: Any) -> str:
    """The TOML name of a value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "array of tables" if value and all(isinstance(v, dict) for v in value) else "array"
    kinds: tuple[tuple[type, str], ...] = (
        (str, "string"),
        (int, "integer"),
        (float, "float"),
        (dict, "table"),
        (datetime.datetime, "date-time"),  # before date: a datetime is a date
        (datetime.date, "date"),
        (datetime.time, "time"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# the bounds checked before tomllib runs ----------------------------------------------------------

# What the nesting scanner stops at: string openers (multi-line first), comments, brackets, and what
# ends a dotted key (=, comma, newline). Everything else (bare keys, numbers, spaces) is skipped.
_TOKEN = re.compile(r"\"\"\"|'''|[\"'#\[\]{}.=,\n]")
_BASIC_REST = re.compile(r'(?:[^"\\\n]+|\\.)*"?')  # after ": to the closing quote, or the line's end
_LITERAL_REST = re.compile(r"[^'\n]*'?")  # after ': to the closing quote, or the line's end
# after """: to the closing """ (which may follow up to two quotes of the content), or the text's end
_ML_BASIC_REST = re.compile(r'(?:[^"\\]+|\\.|"(?!""))*(?:"{3,5})?', re.DOTALL)
_ML_LITERAL_REST = re.compile(r"(?:[^']+|'(?!''))*(?:'{3,5})?")


def _skip(rest: re.Pattern[str], text: str, pos: int) -> int:
    match = rest.match(text, pos)  # each of these patterns matches, if only the empty string
    return match.end() if match else pos


def _check_size(text: str, source: str) -> None:
    if len(text) > MAX_CHARS:
        raise ManifestError(source, None, "toml", f"larger than {MAX_CHARS} characters")
    surrogate = re.search(r"[\ud800-\udfff]", text)
    if surrogate:  # tomllib would accept one in a literal string; the database and JSON would not
        line = _line_at(text, surrogate.start())
        raise ManifestError(source, line, "toml", f"a lone surrogate {surrogate.group()!r} is not Unicode text")


def _check_nesting(text: str, source: str) -> None:
    """Refuse text nested deeper than MAX_DEPTH, without parsing it: tomllib recurses once per level.

    The level at a point is the number of ``[`` and ``{`` open there (outside strings and comments)
    plus the dots of the dotted key being read (``a.b.c = 1`` is two tables deep; tomllib's time
    grows with the square of a dotted key's length). Strings: "basic" with escapes, 'literal',
    and the multi-line forms of both; ``#`` comments run to the end of the line. Brackets of
    table headers count too (``[[a.b]]`` is at level 3 at its dot). Text that is not valid TOML
    is scanned all the same: tomllib refuses it afterwards.
    """
    depth = 0  # [ and { open
    dots = 0  # dots of the current dotted key (or float, or date-time: one at most, harmless)
    pos = 0
    while (match := _TOKEN.search(text, pos)) is not None:
        token, pos = match.group(), match.end()
        if token == ".":
            dots += 1
        elif token == '"':  # a quoted key segment may continue a dotted key: dots are kept
            pos = _skip(_BASIC_REST, text, pos)
            continue
        elif token == "'":
            pos = _skip(_LITERAL_REST, text, pos)
            continue
        else:
            dots = 0
            if token == '"""':
                pos = _skip(_ML_BASIC_REST, text, pos)
            elif token == "'''":
                pos = _skip(_ML_LITERAL_REST, text, pos)
            elif token == "#":
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end
            elif token in "[{":
                depth += 1
            elif token in "]}":
                depth = max(depth - 1, 0)
        if depth + dots > MAX_DEPTH:
            raise ManifestError(source, _line_at(text, match.start()), "toml", f"nested deeper than {MAX_DEPTH} levels")


def _load_toml(text: str, source: str) -> dict[str, Any]:
    _check_size(text, source)
    _check_nesting(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))
        raise ManifestError(source, int(at.group(1)) if at else None, "toml", str(exc)) from None
    except (RecursionError, MemoryError):  # the bounds above should make these impossible: refuse anyway
        raise ManifestError(source, None, "toml", "nested too deeply or too large to parse") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        problem = " ".join(str(exc).split(";")[0].split())  # not Python's advice on raising its limit
        raise ManifestError(source, None, "toml", f"a value that cannot be read: {problem[:200]}") from None


def read_manifest(path: Path) -> str:
    """A manifest file's text, never reading more than MAX_CHARS + 1 characters of it."""
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise RefusedError(f"cannot read {path}: {exc}") from None
    if len(text) > MAX_CHARS:
        raise ManifestError(str(path), None, "toml", f"larger than {MAX_CHARS} characters")
    return text


def load_manifest(path: Path) -> Manifest:
    """Read and parse a manifest file, with the bounds of ``parse_manifest``."""
    return parse_manifest(read_manifest(path), str(path))


# reading the parsed manifest ---------------------------------------------------------------------


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """The line where ``key`` is set, inside ``[section]`` (None: top level).

    Plain string work, no regular expression: this runs on text an attacker wrote.
    """
    current: str | None = None
    spellings = (f'"{key}"', f"'{key}'", key)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith("["):
            end = stripped.find("]")
            if end > 1:  # a header: [section] or [[section]]
                current = stripped[1:end].lstrip("[").strip().strip("\"'")
                # the section's own header, or the first of a dotted one: [role.viewer] sets `role`
                first = current.split(".", 1)[0].strip().strip("\"'")
                if section is not None and section in (current, first) and key == "":
                    return number
                continue
        if current == section and any(
            stripped.startswith(s) and stripped[len(s) :].lstrip().startswith("=") for s in spellings
        ):
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
        if line is None and section is None:  # a top-level key set by a header: [[roles]]
            line = _line_of(self.text, key, "")
        label = f"{section}.{_shown(key)}" if section and key else (section or _shown(key))
        return ManifestError(self.source, line, label, problem)

    def table(self, section: str, value: Any, what: str, limit: int, noun: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(None, section, f"expected a table of {what}, found {_kind(value)}")
        if len(value) > limit:
            raise self.error(section, "", f"more than {limit} {noun} (found {len(value)})")
        return value

    def description(self, section: str | None, key: str, value: Any, problem: str) -> str:
        if not isinstance(value, str):
            raise self.error(section, key, f"{problem}, found {_kind(value)}")
        if len(value) > MAX_DESCRIPTION:
            raise self.error(section, key, f"longer than {MAX_DESCRIPTION} characters (found {len(value)})")
        if text_problem(value, free_text=True):  # a "\u0000" escape: the raw character never gets past tomllib
            raise self.error(section, key, NUL_PROBLEM)
        return value

    def entries(self, section: str, key: str, value: Any, what: str, limit: int) -> list[str]:
        """A list of strings, at most ``limit`` of them."""
        if not isinstance(value, list):
            raise self.error(section, key, f"expected a list of {what}, found {_kind(value)}")
        if len(value) > limit:
            raise self.error(section, key, f"more than {limit} entries (found {len(value)})")
        for entry in value:
            if not isinstance(entry, str):
                raise self.error(section, key, f"expected a list of {what}, found {_kind(entry)} in it")
            if len(entry) > MAX_PERMISSION_NAME:
                raise self.error(
                    section, key, f"{_quoted(entry)} is longer than a permission name ({MAX_PERMISSION_NAME})"
                )
        return value

    def permission(self, section: str, key: str, value: str, *, owner: str | None = None) -> str:
        try:
            permission = Permission.parse(value)
        except InvalidPermissionError as exc:
            raise self.error(section, key, str(exc)) from None
        if owner is not None and permission.service == owner:
            raise self.error(section, key, f"{value!r} is this service's own permission; list it under [permissions]")
        return str(permission)

    def permission_list(self, section: str, key: str, value: Any, *, owner: str) -> tuple[str, ...]:
        names = self.entries(section, key, value, "permission names", MAX_LIST)
        return tuple(sorted({self.permission(section, key, v, owner=owner) for v in names}))


def parse_manifest(text: str, source: str = "manifest") -> Manifest:
    """Parse and check a manifest; raise ``ManifestError`` (a one-line ``RefusedError``) on anything else."""
    data = _load_toml(text, source)
    r = _Reader(text, source)
    for key in data:
        if key not in TOP_LEVEL:
            near = difflib.get_close_matches(key, TOP_LEVEL, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}? " if near else ""
            raise r.error(None, key, f"unknown key; {hint}a manifest has {', '.join(TOP_LEVEL)}")

    service_id = data.get("id")
    if service_id is not None and not isinstance(service_id, str):
        raise r.error(None, "id", f"expected a string (the service id), found {_kind(service_id)}")
    if not isinstance(service_id, str) or not SERVICE_ID.match(service_id):
        raise r.error(
            None, "id", "the service id is 1-48 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if service_id in RESERVED_IDS:
        raise r.error(None, "id", f"{service_id!r} is reserved for the auth server")
    description = r.description(None, "description", data.get("description", ""), "expected a string")

    raw_permissions = r.table(
        "permissions", data.get("permissions", {}), "resource:action = description", MAX_PERMISSIONS, "permissions"
    )
    permissions: dict[str, str] = {}
    for short, text_description in raw_permissions.items():
        parts = short.split(":")
        if len(parts) != 2 or not all(NAME.match(p) for p in parts):
            raise r.error(
                "permissions", short, "expected resource:action, each 1-64 characters of a-z, 0-9, '.', '_', '-'"
            )
        text_description = r.description("permissions", short, text_description, "every permission needs a description")
        if not text_description.strip():
            raise r.error("permissions", short, "every permission needs a description")
        permissions[f"{service_id}:{short}"] = text_description.strip()

    raw_roles = r.table("roles", data.get("roles", {}), "role = [permissions]", MAX_ROLES, "roles")
    roles: dict[str, tuple[str, ...]] = {}
    for role, value in raw_roles.items():
        if not NAME.match(role):
            raise r.error("roles", role, "a role name is 1-64 characters of a-z, 0-9, '.', '_', '-'")
        members = r.entries("roles", role, value, "this service's permissions (resource:action)", MAX_ROLE_MEMBERS)
        if not members:  # it would grant nothing, and a role that grants nothing anyone may grant
            raise r.error("roles", role, "a role needs at least one permission")
        full = set()
        for member in members:
            name = member if member.count(":") == 2 else f"{service_id}:{member}"
            if name not in permissions:
                if member.count(":") == 2 and not member.startswith(service_id + ":"):
                    raise r.error("roles", role, f"{member!r} belongs to another service; roles bundle their own")
                raise r.error("roles", role, f"{_quoted(member)} is not defined under [permissions]")
            full.add(name)
        roles[f"{service_id}:{role}"] = tuple(sorted(full))

    sections: dict[str, dict[str, Any]] = {}
    for section, allowed in SECTION_KEYS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise r.error(None, section, f"expected a table, found {_kind(raw)}")
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
