"""The admin REST API under /admin/ (issue 3), over HTTP with real tokens from a real server:
RFC 6750 answers, strict bodies, precise 4xx, the super admin, and delegated administration —
a service admin of image-store grants image-store roles and nothing else.

One server for the module, with the photo example and a payment service registered; every test
uses names of its own.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    ROOT,
    Api,
    ChitServer,
    ModuleServers,
    access_token,
    as_user,
    assert_error,
    claims_of,
    login,
    refresh,
    scope,
)

PAYMENT = """\
id = "payment"
description = "Card payments"

[permissions]
"charges:create" = "Charge a card"
"charges:read" = "Read a charge"

[roles]
payer = ["charges:create", "charges:read"]
reader = ["charges:read"]
"""


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    photos = ROOT / "examples" / "photos"
    return module_server("admin-api", manifests=[photos / "image-store.toml", photos / "tagging.toml", PAYMENT])


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    return as_user(chit, "admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def dave(chit: ChitServer, admin: Api) -> Api:
    """dave, appointed admin of image-store by the super admin over the API."""
    assert admin.post("/admin/users", {"username": "dave", "password": "dave-password"}).status_code == 201
    r = admin.post("/admin/service-admins", {"username": "dave", "service": "image-store"})
    assert r.status_code == 200, r.text
    assert r.json() == {"appointed": True}
    api = as_user(chit, "dave", "dave-password")
    assert api.token is not None
    assert claims_of(api.token)["scope"] == "chit:service.image-store:admin"
    return api


def new_user(admin: Api, username: str, password: str = "a-long-password", roles: list[str] | None = None) -> str:  # noqa: S107
    r = admin.post("/admin/users", {"username": username, "password": password, "roles": roles or []})
    assert r.status_code == 201, r.text
    user_id: str = r.json()["id"]
    return user_id


# RFC 6750: who may call at all ---------------------------------------------------------------------


def test_no_token_is_401_with_a_bare_bearer_challenge(chit: ChitServer) -> None:
    anonymous = Api(chit, None)
    for method, path in [("GET", "/admin/users"), ("GET", "/admin/audit"), ("POST", "/admin/grants")]:
        r = anonymous.request(method, path, json={"principal": "x", "role": "y"} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "authorization",
    ["Bearer garbage", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer a.b.c"],
)
def test_a_garbage_token_is_401_invalid_token(chit: ChitServer, authorization: str) -> None:
    r = httpx.get(chit.url + "/admin/users", headers={"Authorization": authorization}, timeout=30)
    assert_error(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_another_scheme_is_401(chit: ChitServer) -> None:
    r = httpx.get(chit.url + "/admin/users", auth=("admin", ADMIN_PASSWORD), timeout=30)
    assert_error(r, 401, "invalid_token")
    assert r.headers["www-authenticate"] == "Bearer"  # not our credentials: no error code (RFC 6750 §3.1)


@pytest.mark.parametrize(
    "authorization",
    [["Bearer a.b.c", "Bearer a.b.c"], ["Bearer"], ["Bearer a.b.c extra"]],
    ids=["two-headers", "empty", "malformed"],
)
def test_a_malformed_authorization_is_400_invalid_request_as_in_every_service(
    chit: ChitServer, authorization: list[str]
) -> None:
    headers = [("Authorization", value) for value in authorization]
    r = httpx.get(chit.url + "/admin/users", headers=headers, timeout=30)
    assert_error(r, 400, "invalid_request")
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


def test_a_token_not_meant_for_the_auth_server_is_401(chit: ChitServer, admin: Api) -> None:
    r = admin.post("/admin/clients", {"client_id": "reader-svc", "scope": ["image-store:images:read"]})
    assert r.status_code == 201, r.text
    token = httpx.post(
        chit.token_url, data={"grant_type": "client_credentials"}, auth=("reader-svc", r.json()["client_secret"])
    ).json()["access_token"]
    assert claims_of(token)["aud"] == ["image-store"]
    assert_error(Api(chit, token).get("/admin/users"), 401, "invalid_token", "not meant for the auth server")


def test_a_revoked_token_is_401(chit: ChitServer) -> None:
    token = access_token(login(chit, "admin", ADMIN_PASSWORD))
    assert Api(chit, token).get("/admin/users").status_code == 200
    r = httpx.post(chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"}, timeout=30)
    assert r.status_code == 200
    assert_error(Api(chit, token).get("/admin/users"), 401, "invalid_token")


def test_a_user_cannot_read_the_audit_log(chit: ChitServer, admin: Api) -> None:
    new_user(admin, "plain-user", "plain-user-password")
    plain = as_user(chit, "plain-user", "plain-user-password")
    assert plain.token is not None
    assert claims_of(plain.token)["aud"] == ["chit"]
    r = plain.get("/admin/audit")
    assert_error(r, 403, "insufficient_scope", "chit:audit:read")
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    for path in ("/admin/users", "/admin/clients", "/admin/roles", "/admin/grants", "/admin/sessions", "/admin/keys"):
        assert_error(plain.get(path), 403, "insufficient_scope")
    assert_error(
        plain.post("/admin/users", {"username": "made-by-plain", "password": "x" * 12}), 403, "insufficient_scope"
    )
    # a role holding chit:audit:read opens it
    assert admin.post("/admin/roles", {"name": "log-reader", "permissions": ["chit:audit:read"]}).status_code == 201
    assert admin.post("/admin/grants", {"principal": "plain-user", "role": "log-reader"}).status_code == 200
    reader = as_user(chit, "plain-user", "plain-user-password")
    assert reader.get("/admin/audit").status_code == 200
    assert_error(reader.get("/admin/users"), 403, "insufficient_scope")


# the super admin does everything -----------------------------------------------------------------


def test_the_super_admin_manages_users_clients_roles_and_grants(chit: ChitServer, admin: Api) -> None:
    r = admin.post("/admin/users", {"username": "sa-user", "password": "sa-user-password"})
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["username"] == "sa-user"
    assert user["id"].startswith("usr_")
    assert user["disabled"] is False
    assert "password" not in r.text
    assert "sa-user" in [u["username"] for u in admin.get("/admin/users").json()["users"]]

    r = admin.post("/admin/clients", {"client_id": "sa-svc", "scope": ["tagging:tags:read"]})
    assert r.status_code == 201, r.text
    client = r.json()
    assert client["grant_types"] == ["client_credentials"]
    assert client["scope"] == ["tagging:tags:read"]
    secret = client["client_secret"]
    cc = httpx.post(chit.token_url, data={"grant_type": "client_credentials"}, auth=("sa-svc", secret), timeout=30)
    assert scope(cc) == {"tagging:tags:read"}
    listed = {c["client_id"]: c for c in admin.get("/admin/clients").json()["clients"]}
    assert "client_secret" not in listed["sa-svc"]
    assert listed["chit-cli"]["public"] is True

    r = admin.post("/admin/roles", {"name": "sa-role", "permissions": ["tagging:tags:write", "image-store:images:*"]})
    assert r.status_code == 201, r.text
    roles = {role["name"]: role for role in admin.get("/admin/roles").json()["roles"]}
    assert roles["sa-role"]["permissions"] == ["image-store:images:*", "tagging:tags:write"]
    assert roles["image-store:viewer"]["service"] == "image-store"

    assert admin.post("/admin/grants", {"principal": "user:sa-user", "role": "sa-role"}).json() == {"granted": True}
    assert admin.post("/admin/grants", {"principal": "user:sa-user", "role": "sa-role"}).json() == {"granted": False}
    assert {"principal": "user sa-user", "role": "sa-role"} in admin.get("/admin/grants").json()["grants"]
    assert scope(login(chit, "sa-user", "sa-user-password")) == {"image-store:images:*", "tagging:tags:write"}
    assert admin.post("/admin/grants", {"principal": "client:sa-svc", "role": "sa-role"}).json() == {"granted": True}
    cc = httpx.post(chit.token_url, data={"grant_type": "client_credentials"}, auth=("sa-svc", secret), timeout=30)
    assert scope(cc) == {"tagging:tags:read", "tagging:tags:write", "image-store:images:*"}

    r = admin.post("/admin/grants/revoke", {"principal": "user:sa-user", "role": "sa-role"})
    assert r.json() == {"revoked": True}
    assert admin.post("/admin/grants/revoke", {"principal": "user:sa-user", "role": "sa-role"}).json() == {
        "revoked": False
    }
    assert scope(login(chit, "sa-user", "sa-user-password")) == set()

    assert admin.post("/admin/users/sa-user/disable").json()["disabled"] is True
    assert login(chit, "sa-user", "sa-user-password").status_code == 400
    assert admin.post("/admin/users/sa-user/enable").json()["disabled"] is False
    assert login(chit, "sa-user", "sa-user-password").status_code == 200


def test_the_super_admin_registers_services_over_the_api(chit: ChitServer, admin: Api) -> None:
    text = '[permissions]\n"maps:read" = "Read a map"\n[roles]\nreader = ["maps:read"]\n'
    text = 'id = "atlas"\ndescription = "Maps"\n' + text
    r = admin.put("/admin/services/atlas", {"manifest": text})
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["created"], first["changed"], first["client_id"]) == (True, True, "atlas")
    assert first["client_secret"]
    again = admin.put("/admin/services/atlas", {"manifest": text}).json()
    assert (again["created"], again["changed"], again["client_secret"]) == (False, False, None)
    services = {s["id"]: s for s in admin.get("/admin/services").json()["services"]}
    assert services["atlas"]["permissions"] == {"atlas:maps:read": "Read a map"}
    assert set(services) >= {"image-store", "tagging", "payment", "atlas"}

    assert_error(admin.put("/admin/services/other", {"manifest": text}), 400, "invalid_request", "'atlas'")
    broken = text + 'writer = ["maps:write"]\n'
    assert_error(
        admin.put("/admin/services/atlas", {"manifest": broken}),
        400,
        "invalid_request",
        "manifest:7: roles.writer:",
    )


def test_a_manifest_role_without_permissions_is_400_naming_it_not_a_conflict_to_retry(admin: Api) -> None:
    text = 'id = "shelf"\ndescription = "Books"\n[permissions]\n"books:read" = "Read a book"\n'
    text += '[roles]\nreader = ["books:read"]\nplaceholder = []\n'
    r = admin.put("/admin/services/shelf", {"manifest": text})
    assert_error(r, 400, "invalid_request")
    assert r.json()["error_description"] == "manifest:7: roles.placeholder: a role needs at least one permission"
    assert "shelf" not in {s["id"] for s in admin.get("/admin/services").json()["services"]}
    [refusal] = [e for e in admin.audit("admin.refused") if e["detail"]["operation"] == "PUT /admin/services/shelf"]
    assert refusal["detail"]["status"] == 400


def test_the_super_admin_lists_and_rotates_keys(chit: ChitServer, admin: Api) -> None:
    keys = admin.get("/admin/keys").json()["keys"]
    assert keys
    assert all(set(k) == {"kid", "alg", "signs_from"} for k in keys)
    r = admin.post("/admin/keys/rotate", {"alg": "ES256"})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["alg"] == "ES256"
    assert rotated["previous_kid"] in {k["kid"] for k in keys}
    assert rotated["kid"] in {k["kid"] for k in admin.get("/admin/keys").json()["keys"]}
    deadline = time.monotonic() + 3
    while rotated["kid"] not in {k["kid"] for k in httpx.get(chit.url + "/.well-known/jwks.json").json()["keys"]}:
        assert time.monotonic() < deadline, "the new key was not published"
        time.sleep(0.1)
    assert_error(admin.post("/admin/keys/rotate", {"alg": "HS256"}), 400, "invalid_request", "HS256")


# strict bodies and precise errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/admin/users", {"username": "extra-field", "password": "a-long-password", "admin": True}, "admin"),
        ("/admin/clients", {"client_id": "extra-client", "secret": "mine"}, "secret"),
        ("/admin/roles", {"name": "extra-role", "permissions": ["chit:audit:read"], "service": "x"}, "service"),
        ("/admin/grants", {"principal": "admin", "role": "chit:super-admin", "until": 5}, "until"),
        ("/admin/api-keys", {"owner": "admin", "scope": ["chit:audit:read"], "secret": "x"}, "secret"),
    ],
)
def test_unknown_fields_are_refused_by_name(admin: Api, path: str, body: dict[str, Any], field: str) -> None:
    assert_error(admin.post(path, body), 400, "invalid_request", field)


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/admin/users", {"username": 5, "password": "a-long-password"}, "username"),
        ("/admin/users", {"username": "typed", "password": "a-long-password", "roles": "viewer"}, "roles"),
        ("/admin/users", {"username": "no password"}, "password"),
        ("/admin/users", {"username": "short-pw", "password": "short"}, "password"),
        ("/admin/users", ["not", "an", "object"], "body"),
        ("/admin/clients", {"client_id": "typed-client", "public": "maybe"}, "public"),
        ("/admin/roles", {"name": "typed-role", "permissions": []}, "permissions"),
        ("/admin/roles", {"name": "typed-role", "permissions": ["NOT A PERMISSION"]}, "NOT A PERMISSION"),
        ("/admin/api-keys", {"owner": "admin", "scope": ["chit:audit:read"], "expires_in": 59}, "expires_in"),
        ("/admin/api-keys", {"owner": "admin", "scope": ["chit:audit:read"], "expires_in": "soon"}, "expires_in"),
    ],
)
def test_bad_types_and_values_are_400(admin: Api, path: str, body: Any, fragment: str) -> None:
    assert_error(admin.post(path, body), 400, "invalid_request", fragment)


def test_a_body_that_is_not_json_is_400(chit: ChitServer, admin: Api) -> None:
    r = admin.request("POST", "/admin/users", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")
    assert "not json" not in [u["username"] for u in admin.get("/admin/users").json()["users"]]


def test_bad_query_parameters_are_400(admin: Api) -> None:
    assert_error(admin.get("/admin/audit", params={"limit": 0}), 400, "invalid_request", "limit")
    assert_error(admin.get("/admin/audit", params={"after": "x"}), 400, "invalid_request", "after")


def test_unknown_names_are_404(admin: Api) -> None:
    assert_error(admin.post("/admin/users/no-such-user/disable"), 404, "not_found", "no-such-user")
    assert_error(
        admin.post("/admin/grants", {"principal": "user:no-such-user", "role": "image-store:viewer"}), 404, "not_found"
    )
    new_user(admin, "for-404")
    assert_error(
        admin.post("/admin/grants", {"principal": "for-404", "role": "no-such-role"}), 404, "not_found", "no-such-role"
    )
    assert_error(
        admin.post("/admin/service-admins", {"username": "for-404", "service": "no-such-service"}), 404, "not_found"
    )
    assert_error(
        admin.post("/admin/service-admins", {"username": "no-such-user", "service": "tagging"}), 404, "not_found"
    )
    assert_error(admin.delete("/admin/api-keys/key_nosuchkey"), 404, "not_found")
    assert_error(admin.post("/admin/api-keys/key_nosuchkey/rotate"), 404, "not_found")
    assert_error(admin.delete("/admin/sessions/rtf_nosuchsession"), 404, "not_found")


def test_duplicates_are_409(admin: Api) -> None:
    new_user(admin, "dup-409")
    assert_error(admin.post("/admin/users", {"username": "DUP-409", "password": "another-password"}), 409, "conflict")
    assert admin.post("/admin/clients", {"client_id": "dup-409-client"}).status_code == 201
    assert_error(admin.post("/admin/clients", {"client_id": "dup-409-client"}), 409, "conflict")
    assert admin.post("/admin/roles", {"name": "dup-409-role", "permissions": ["chit:users:read"]}).status_code == 201
    assert_error(
        admin.post("/admin/roles", {"name": "dup-409-role", "permissions": ["chit:users:read"]}), 409, "conflict"
    )


def test_concurrent_creation_of_one_username_creates_it_once(chit: ChitServer, admin: Api) -> None:
    barrier = threading.Barrier(8)

    def create(i: int) -> httpx.Response:
        barrier.wait()
        return admin.post("/admin/users", {"username": "racer", "password": f"racer-password-{i}"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(create, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    winner = next(i for i, r in enumerate(responses) if r.status_code == 201)
    assert login(chit, "racer", f"racer-password-{winner}").status_code == 200
    assert [u["username"] for u in admin.get("/admin/users").json()["users"]].count("racer") == 1


def test_creating_a_client_with_an_unknown_grant_type_is_400(admin: Api) -> None:
    r = admin.post("/admin/clients", {"client_id": "implicit-client", "grant_types": ["implicit"]})
    assert_error(r, 400, "invalid_request", "implicit")
    assert "implicit-client" not in [c["client_id"] for c in admin.get("/admin/clients").json()["clients"]]


# delegated administration: a service admin of image-store ----------------------------------------


def test_a_service_admin_grants_and_revokes_their_services_roles(chit: ChitServer, dave: Api, admin: Api) -> None:
    new_user(admin, "carol", "carol-password")
    r = dave.post("/admin/grants", {"principal": "carol", "role": "image-store:owner"})
    assert r.status_code == 200, r.text
    assert r.json() == {"granted": True}
    assert scope(login(chit, "carol", "carol-password")) == {
        "image-store:images:read",
        "image-store:images:write",
        "image-store:images:delete",
    }
    assert dave.post("/admin/grants/revoke", {"principal": "carol", "role": "image-store:owner"}).json() == {
        "revoked": True
    }
    assert scope(login(chit, "carol", "carol-password")) == set()


def test_a_service_admin_of_image_store_cannot_grant_payment(chit: ChitServer, dave: Api, admin: Api) -> None:
    new_user(admin, "frank", "frank-password")
    r = dave.post("/admin/grants", {"principal": "frank", "role": "payment:payer"})
    assert_error(r, 403, "insufficient_scope", "payment:payer")
    # what another service's role holds is not told to one who may not read roles
    assert "payment:charges" not in r.json()["error_description"]
    assert_error(
        dave.post("/admin/grants", {"principal": "frank", "role": "tagging:editor"}), 403, "insufficient_scope"
    )
    assert scope(login(chit, "frank", "frank-password")) == set()

    # nor revoke payment roles someone else granted
    assert admin.post("/admin/grants", {"principal": "frank", "role": "payment:reader"}).status_code == 200
    assert_error(
        dave.post("/admin/grants/revoke", {"principal": "frank", "role": "payment:reader"}), 403, "insufficient_scope"
    )
    assert scope(login(chit, "frank", "frank-password")) == {"payment:charges:read"}


def test_holding_a_permission_is_not_enough_to_grant_it(chit: ChitServer, admin: Api) -> None:
    """Only administering a service lets one hand its roles out; holding them does not."""
    assert admin.post("/admin/roles", {"name": "key-reader", "permissions": ["chit:keys:read"]}).status_code == 201
    new_user(admin, "holder", "holder-password", ["payment:payer", "key-reader"])  # aud includes chit
    new_user(admin, "friend", "friend-password")
    holder = as_user(chit, "holder", "holder-password")
    refused = holder.post("/admin/grants", {"principal": "friend", "role": "payment:payer"})
    assert_error(refused, 403, "insufficient_scope", "you do not administer", "payment:charges:create")
    assert scope(login(chit, "friend", "friend-password")) == set()


def test_a_service_admin_cannot_grant_super_admin_even_to_themselves(chit: ChitServer, dave: Api) -> None:
    assert_error(
        dave.post("/admin/grants", {"principal": "dave", "role": "chit:super-admin"}),
        403,
        "insufficient_scope",
        "may not grant 'chit:super-admin'",
    )
    assert scope(login(chit, "dave", "dave-password")) == {"chit:service.image-store:admin"}


def test_a_service_admin_cannot_create_roles_users_or_register_services(dave: Api) -> None:
    r = dave.post("/admin/roles", {"name": "dave-payment", "permissions": ["payment:charges:create"]})
    assert_error(r, 403, "insufficient_scope")
    r = dave.post("/admin/roles", {"name": "dave-images", "permissions": ["image-store:images:read"]})
    assert_error(r, 403, "insufficient_scope", "chit:roles:write")
    assert_error(
        dave.post("/admin/users", {"username": "dave-made", "password": "a-long-password"}), 403, "insufficient_scope"
    )
    manifest = (ROOT / "examples/photos/image-store.toml").read_text()
    assert_error(dave.put("/admin/services/image-store", {"manifest": manifest}), 403, "insufficient_scope")
    assert_error(dave.get("/admin/audit"), 403, "insufficient_scope")


def test_a_role_maker_cannot_bundle_permissions_they_cannot_grant(chit: ChitServer, admin: Api) -> None:
    """chit:roles:write lets one create roles, but only of permissions one holds or administers."""
    assert admin.post("/admin/roles", {"name": "role-maker", "permissions": ["chit:roles:write"]}).status_code == 201
    new_user(admin, "rita", "rita-password", roles=["role-maker"])
    assert admin.post("/admin/service-admins", {"username": "rita", "service": "image-store"}).status_code == 200
    rita = as_user(chit, "rita", "rita-password")
    r = rita.post("/admin/roles", {"name": "rita-images", "permissions": ["image-store:images:read"]})
    assert r.status_code == 201, r.text
    r = rita.post(
        "/admin/roles", {"name": "rita-payment", "permissions": ["image-store:images:read", "payment:charges:*"]}
    )
    assert_error(r, 403, "insufficient_scope", "payment:charges:*")
    assert "rita-payment" not in {role["name"] for role in admin.get("/admin/roles").json()["roles"]}


def test_a_service_admin_cannot_appoint_admins(chit: ChitServer, dave: Api, admin: Api) -> None:
    new_user(admin, "gina", "gina-password")
    assert_error(
        dave.post("/admin/service-admins", {"username": "gina", "service": "image-store"}), 403, "insufficient_scope"
    )
    assert_error(
        dave.post("/admin/service-admins", {"username": "gina", "service": "payment"}), 403, "insufficient_scope"
    )
    # nor by granting the service-admin role directly
    r = dave.post("/admin/grants", {"principal": "gina", "role": "chit:service-admin.image-store"})
    assert_error(r, 403, "insufficient_scope")
    assert scope(login(chit, "gina", "gina-password")) == set()


def test_a_service_admin_is_appointed_once_and_audited(admin: Api, dave: Api) -> None:
    again = admin.post("/admin/service-admins", {"username": "dave", "service": "image-store"})
    assert again.json() == {"appointed": False}
    events = admin.get("/admin/audit", params={"type": "admin.appointed", "limit": 1000}).json()["events"]
    dave_events = [e for e in events if e["detail"].get("username") == "dave"]
    assert len(dave_events) == 1
    assert dave_events[0]["detail"]["service"] == "image-store"


# grants change the next token ----------------------------------------------------------------------


def test_a_grant_widens_the_next_login_and_a_revoked_grant_narrows_the_next_refresh(
    chit: ChitServer, admin: Api
) -> None:
    new_user(admin, "erin", "erin-password")
    before = login(chit, "erin", "erin-password")
    assert scope(before) == set()

    assert admin.post("/admin/grants", {"principal": "erin", "role": "image-store:viewer"}).status_code == 200
    # the grant widens a new login, not an existing session (RFC 6749 §6)
    old_session = refresh(chit, before.json()["refresh_token"])
    assert scope(old_session) == set()
    widened = login(chit, "erin", "erin-password")
    assert scope(widened) == {"image-store:images:read"}
    assert claims_of(widened.json()["access_token"])["aud"] == ["image-store"]

    assert admin.post("/admin/grants/revoke", {"principal": "erin", "role": "image-store:viewer"}).status_code == 200
    narrowed = refresh(chit, widened.json()["refresh_token"])
    assert scope(narrowed) == set()
    assert claims_of(narrowed.json()["access_token"])["scope"] == ""
    assert scope(login(chit, "erin", "erin-password")) == set()


# sessions ------------------------------------------------------------------------------------------


def test_list_and_revoke_a_users_session(chit: ChitServer, admin: Api) -> None:
    user_id = new_user(admin, "sess-user", "sess-password")
    first = login(chit, "sess-user", "sess-password").json()
    second = login(chit, "sess-user", "sess-password").json()
    sessions = admin.get("/admin/sessions", params={"user_id": user_id}).json()["sessions"]
    assert len(sessions) == 2
    assert {s["client_id"] for s in sessions} == {"chit-cli"}
    assert {s["user_id"] for s in sessions} == {user_id}
    assert all(s["revoked_at"] is None for s in sessions)
    session_id = claims_of(first["access_token"])["sid"]
    assert session_id in {s["id"] for s in sessions}
    everyone = {s["id"] for s in admin.get("/admin/sessions").json()["sessions"]}
    assert {s["id"] for s in sessions} <= everyone

    assert admin.delete(f"/admin/sessions/{session_id}").json() == {"revoked": True}
    assert admin.delete(f"/admin/sessions/{session_id}").json() == {"revoked": False}
    r = refresh(chit, first["refresh_token"])
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    assert_error(Api(chit, first["access_token"]).get("/admin/sessions"), 401, "invalid_token")
    assert refresh(chit, second["refresh_token"]).status_code == 200  # the other session lives on
    listed = {s["id"]: s for s in admin.get("/admin/sessions", params={"user_id": user_id}).json()["sessions"]}
    assert listed[session_id]["revoked_reason"] == "revoked"


def test_a_user_revokes_their_own_session_but_not_anothers(chit: ChitServer, admin: Api) -> None:
    new_user(admin, "own-sess", "own-sess-password")
    other_id = new_user(admin, "other-sess", "other-sess-password")
    mine = login(chit, "own-sess", "own-sess-password").json()
    theirs = login(chit, "other-sess", "other-sess-password").json()
    me = Api(chit, mine["access_token"])
    their_session = claims_of(theirs["access_token"])["sid"]
    # another's session is as unknown as one that does not exist
    assert_error(me.delete(f"/admin/sessions/{their_session}"), 404, "not_found")
    assert me.delete(f"/admin/sessions/{their_session}").json() == me.delete("/admin/sessions/rtf_nosuch").json() | {
        "error_description": f"no session {their_session!r} that this token could revoke"
    }
    assert refresh(chit, theirs["refresh_token"]).status_code == 200
    assert_error(me.get("/admin/sessions", params={"user_id": other_id}), 403, "insufficient_scope")
    assert me.delete(f"/admin/sessions/{claims_of(mine['access_token'])['sid']}").json() == {"revoked": True}
    assert refresh(chit, mine["refresh_token"]).status_code == 400


# OpenAPI -------------------------------------------------------------------------------------------


def test_openapi_lists_the_admin_paths_and_the_bearer_scheme(chit: ChitServer) -> None:
    r = httpx.get(chit.url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    for path in (
        "/admin/users",
        "/admin/clients",
        "/admin/services",
        "/admin/services/{service_id}",
        "/admin/roles",
        "/admin/grants",
        "/admin/grants/revoke",
        "/admin/service-admins",
        "/admin/api-keys",
        "/admin/sessions",
        "/admin/keys",
        "/admin/keys/rotate",
        "/admin/audit",
    ):
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
    assert len(bearer) == 1, schemes
    for path, operations in paths.items():
        if path.startswith("/admin/"):
            for method, operation in operations.items():
                assert {bearer[0]: []} in operation.get("security", []), (method, path)
    assert "/oauth2/token" in paths
