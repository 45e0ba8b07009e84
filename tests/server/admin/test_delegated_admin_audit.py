"""An admin API call made with a delegated token is audited with the whole chain: the user it is made for,
then every service acting for them (current first), as token events name them. A console service whose
manifest may exercise chit:users:read for a user reads the users with her delegated token, and the
refusal of what that token does not carry names her and the console."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ADMIN_PASSWORD, Api, ChitServer, ModuleServers, as_user, claims_of, register_service, user_token

CONSOLE = """\
id = "console"
description = "An operators' console acting for its user"

[permissions]
"pages:read" = "See the console"

[on_behalf]
permissions = ["chit:users:read"]
"""


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("delegated-admin-audit")


def test_a_refusal_of_a_delegated_admin_call_names_the_user_and_the_acting_service(
    chit: ChitServer, tmp_path: Path
) -> None:
    console = register_service(chit, tmp_path, "console", CONSOLE)
    # her token names the console among its audience, as a token the console may exchange must
    permissions = ["--permission", "chit:users:read", "--permission", "console:pages:read"]
    chit.cli_ok("role", "create", "user-reader", *permissions)
    chit.add_user("olga", "olga-password-1", "--role", "user-reader")
    delegated = console.token(user_token(chit, "olga", "olga-password-1"))
    claims = claims_of(delegated)
    assert claims["scope"] == "chit:users:read"
    assert claims["act"]["client_id"] == "console"
    api = Api(chit, delegated)
    assert api.get("/admin/users").status_code == 200  # what the token carries, it may do
    headers = {"X-Request-ID": "delegated-admin-refusal"}
    refused = api.post("/admin/users", {"username": "mallory", "password": "mallory-password-1"}, headers=headers)
    assert refused.status_code == 403, refused.text
    admin = as_user(chit, "admin", ADMIN_PASSWORD)
    found = admin.get("/admin/audit", params={"type": "admin.refused", "request_id": headers["X-Request-ID"]})
    (event,) = found.json()["events"]
    assert event["actors"] == [claims["sub"], "console"]
    assert event["client_id"] == "console"
