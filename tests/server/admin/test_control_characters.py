"""Control characters in admin API input, over HTTP on SQLite and on PostgreSQL (whose text columns
cannot hold NUL): whatever carries one, a body field, a path or query parameter or a manifest, is
refused with a 400 that says where, writes nothing, and is audited as ``admin.refused``. A
description is free text: it may break lines, but holds no NUL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ADMIN_PASSWORD, Api, ChitServer, as_user, assert_error, free_port

CONTROL = "contains control characters"
NUL = "contains a NUL character"

# (method, path, JSON body or None, the whole error_description)
CASES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    (
        "PUT",
        "/admin/services/n1",
        {"manifest": 'id = "n1"\ndescription = "a\\u0000b"\n'},
        f"manifest:2: description: {NUL}",
    ),
    (
        "PUT",
        "/admin/services/n2",
        {"manifest": 'id = "n2"\n[permissions]\n"a:b" = "x\\u0000"\n'},
        f"manifest:3: permissions.a:b: {NUL}",
    ),
    (
        "POST",
        "/admin/roles",
        {"name": "r-nul", "permissions": ["chit:users:read"], "description": "a\u0000b"},
        f"description: {NUL}",
    ),
    ("POST", "/admin/grants", {"principal": "a\u0000b", "role": "chit:super-admin"}, f"principal: {CONTROL}"),
    ("POST", "/admin/grants", {"principal": "admin", "role": "a\u0000b"}, f"role: {CONTROL}"),
    ("POST", "/admin/grants", {"principal": "a\nb", "role": "chit:super-admin"}, f"principal: {CONTROL}"),
    ("POST", "/admin/users", {"username": "u1", "password": "p\u0000ssword-long"}, f"password: {CONTROL}"),
    ("POST", "/admin/api-keys", {"owner": "a\u0000", "scope": ["chit:users:read"]}, f"owner: {CONTROL}"),
    ("POST", "/admin/service-admins", {"username": "admin", "service": "a\u0000"}, f"service: {CONTROL}"),
    ("POST", "/admin/api-keys/a%00b/rotate", None, f"path.key_id: {CONTROL}"),
    ("DELETE", "/admin/api-keys/a%1Bb", None, f"path.key_id: {CONTROL}"),
    ("DELETE", "/admin/sessions/a%00b", None, f"path.session_id: {CONTROL}"),
    ("POST", "/admin/users/a%00b/disable", None, f"path.username: {CONTROL}"),
    ("DELETE", "/admin/services/a%00b", None, f"path.service_id: {CONTROL}"),
    ("GET", "/admin/sessions?user_id=a%00b", None, f"query.user_id: {CONTROL}"),
    ("GET", "/admin/audit?type=a%00b", None, f"query.type: {CONTROL}"),
    ("GET", "/admin/delegations?user=a%00b", None, f"query.user: {CONTROL}"),
    ("GET", "/admin/api-keys?owner=a%0Ab", None, f"query.owner: {CONTROL}"),
]
LISTS = ("/admin/users", "/admin/clients", "/admin/roles", "/admin/grants", "/admin/services", "/admin/api-keys")


@pytest.fixture(params=["sqlite", "postgresql"])
def chit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChitServer]:
    """A fresh server on each backend; PostgreSQL missing fails in CI and skips elsewhere (``postgres_url``)."""
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with ChitServer(tmp_path / "data", free_port(), database_url=database_url).running() as server:
        yield server


def state(admin: Api) -> dict[str, Any]:
    """Everything the refused requests could have written, as the admin API lists it."""
    return {path: admin.get(path).json() for path in LISTS}


def test_a_control_character_anywhere_is_a_precise_400_that_writes_nothing_and_is_audited(chit: ChitServer) -> None:
    admin = as_user(chit, "admin", ADMIN_PASSWORD)
    before = state(admin)
    refused_before = len(admin.audit("admin.refused"))

    for method, path, body, description in CASES:
        r = admin.request(method, path, json=body)
        assert_error(r, 400, "invalid_request")
        assert r.json()["error_description"] == description, (method, path)

    assert state(admin) == before
    assert "unhandled error" not in chit.log()
    refusals = admin.audit("admin.refused")
    assert len(refusals) == refused_before + len(CASES)  # each refusal once, none twice
    reasons = {e["detail"]["reason"] for e in refusals}
    assert {description for *_, description in CASES} <= reasons
    [rotate] = [e for e in refusals if e["detail"]["operation"] == "POST /admin/api-keys/a\x00b/rotate"]
    assert (rotate["outcome"], rotate["actors"], rotate["detail"]["status"]) == ("failure", [admin.subject], 400)


def test_a_description_may_break_lines(chit: ChitServer) -> None:
    admin = as_user(chit, "admin", ADMIN_PASSWORD)
    description = "Reads users,\n\tnothing else"
    r = admin.post("/admin/roles", {"name": "reader", "permissions": ["chit:users:read"], "description": description})
    assert r.status_code == 201, r.text
    manifest = f'id = "notes"\ndescription = """{description}"""\n[permissions]\n"notes:read" = "Read\\na note"\n'
    r = admin.put("/admin/services/notes", {"manifest": manifest})
    assert r.status_code == 200, r.text
    [notes] = [s for s in admin.get("/admin/services").json()["services"] if s["id"] == "notes"]
    assert (notes["description"], notes["permissions"]) == (description, {"notes:notes:read": "Read\na note"})
