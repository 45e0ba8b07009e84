"""The security findings of the admin API review, each sent as the actual attack to a real ``chit serve``
over HTTP: what a request creates or changes is bounded by the token presented with it (DESIGN §4
"Authority follows the presenting token"), refusals are audited (``admin.refused``, outcome
``failure``), and the answers tell nothing of what the caller may not read.

One server for the module, with the photo example and a payment service registered and a gateway
that exchanges API keys; every test uses names of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
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
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
API_KEY_TYPE = "urn:chit:token-type:api-key"
INACTIVE = {"active": False}
REFUSED = "admin.refused"
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


# helpers (copied from test_admin_api.py and test_api_keys.py) ------------------------------------


class Edge:
    """A client that exchanges API keys: the gateway. A confidential client, so it also introspects."""

    def __init__(self, chit: ChitServer, client_id: str, secret: str) -> None:
        self.chit, self.client_id, self.secret = chit, client_id, secret

    def exchange(self, api_key: str, **extra: str) -> httpx.Response:
        data = {"grant_type": TOKEN_EXCHANGE, "subject_token": api_key, "subject_token_type": API_KEY_TYPE, **extra}
        return httpx.post(self.chit.token_url, data=data, auth=(self.client_id, self.secret), timeout=30)

    def token_for(self, api_key: str) -> str:
        return access_token(self.exchange(api_key))

    def introspect(self, token: str) -> dict[str, Any]:
        r = httpx.post(
            self.chit.url + "/oauth2/introspect", data={"token": token}, auth=(self.client_id, self.secret), timeout=30
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def rid(prefix: str) -> dict[str, str]:
    """An ``X-Request-ID`` header of its own, to find the request's audit event."""
    return {"X-Request-ID": unique(prefix)}


def refusal(admin: Api, headers: dict[str, str]) -> dict[str, Any]:
    """The one ``admin.refused`` event of the request sent with ``headers``, read by the super admin."""
    r = admin.get("/admin/audit", params={"type": REFUSED, "request_id": headers["X-Request-ID"]})
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert len(events) == 1, events
    event: dict[str, Any] = events[0]
    assert event["type"] == REFUSED
    assert event["outcome"] == "failure"
    assert event["request_id"] == headers["X-Request-ID"]
    assert event["detail"]["reason"], event
    return event


def assert_refusal_audited(admin: Api, headers: dict[str, str], actor: str, operation: str) -> dict[str, Any]:
    event = refusal(admin, headers)
    assert event["actors"] == [actor], event
    assert event["detail"]["operation"] == operation, event
    return event


def new_user(chit: ChitServer, name: str, *roles: str) -> str:
    args = [arg for role in roles for arg in ("--role", role)]
    user_id: str = chit.add_user(name, f"{name}-password", *args)["id"]
    return user_id


def user_api(chit: ChitServer, name: str) -> Api:
    return as_user(chit, name, f"{name}-password")


def admin_key_ids(admin: Api) -> set[str]:
    r = admin.get("/admin/api-keys", params={"owner": "admin"})
    assert r.status_code == 200, r.text
    return {k["id"] for k in r.json()["api_keys"]}


def create_key(admin: Api, owner: str, *scopes: str) -> dict[str, Any]:
    r = admin.post("/admin/api-keys", {"owner": owner, "scope": list(scopes)})
    assert r.status_code == 201, r.text
    key: dict[str, Any] = r.json()
    assert sorted(key["scope"]) == sorted(scopes)
    return key


def client_credentials(chit: ChitServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(chit.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret), timeout=30)


def same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.json()) == (b.status_code, b.json())
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")


def same_but_for_the_id(real: httpx.Response, real_id: str, made_up: httpx.Response, made_up_id: str) -> None:
    """The same status, error and description, but for the id the caller sent himself."""
    assert (real.status_code, real.json()["error"]) == (made_up.status_code, made_up.json()["error"])
    assert real.json()["error_description"].replace(real_id, made_up_id) == made_up.json()["error_description"]


# fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    photos = ROOT / "examples" / "photos"
    server = module_server(
        "security-findings", manifests=[photos / "image-store.toml", photos / "tagging.toml", PAYMENT]
    )
    server.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
    return server


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    api = as_user(chit, "admin", ADMIN_PASSWORD)
    assert api.token is not None
    assert claims_of(api.token)["scope"] == "chit:*:*"
    return api


@pytest.fixture(scope="module")
def gateway(chit: ChitServer) -> Edge:
    secret = chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"]
    chit.cli_ok("grant", "client:gateway", "edge")
    return Edge(chit, "gateway", secret)


@pytest.fixture(scope="module")
def narrow_key(admin: Api) -> dict[str, Any]:
    """An API key of the super admin's carrying only chit:users:read: a bot's."""
    return create_key(admin, "admin", "chit:users:read")


@pytest.fixture
def bot(chit: ChitServer, gateway: Edge, narrow_key: dict[str, Any], admin: Api) -> Api:
    """The admin API as the narrow key's exchanged token sees it (a fresh token per test)."""
    token = gateway.token_for(narrow_key["api_key"])
    claims = claims_of(token)
    assert claims["scope"] == "chit:users:read"
    assert claims["aud"] == ["chit"]
    assert claims["sub"] == admin.subject
    api = Api(chit, token)
    assert api.get("/admin/users").status_code == 200  # the token works for what it carries
    return api


# 1. a manifest's [needs] and [on_behalf] ---------------------------------------------------------


def manifest(service_id: str, extra: str = "") -> str:
    return f'id = "{service_id}"\ndescription = "test"\n\n[permissions]\n"things:read" = "Read a thing"\n' + extra


@pytest.fixture(scope="module")
def registrar(chit: ChitServer) -> Api:
    """A user whose only permission is chit:services:admin."""
    chit.cli_ok("role", "create", "service-registrar", "--permission", "chit:services:admin")
    chit.add_user("registrar", "registrar-password", "--role", "service-registrar")
    api = as_user(chit, "registrar", "registrar-password")
    assert api.token is not None
    assert claims_of(api.token)["scope"] == "chit:services:admin"
    return api


def registered_services(admin: Api) -> set[str]:
    r = admin.get("/admin/services")
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()["services"]}


def test_a_services_admin_registers_a_manifest_that_needs_nothing(registrar: Api, admin: Api) -> None:
    """The control: the refusals below are about [needs] and [on_behalf], not about registering."""
    r = registrar.put("/admin/services/benign", {"manifest": manifest("benign")})
    assert r.status_code == 200, r.text
    assert r.json()["client_secret"]
    assert "benign" in registered_services(admin)


@pytest.mark.parametrize(
    "extra",
    [
        '[needs]\npermissions = ["chit:*:*"]\n',
        '[needs]\npermissions = ["chit:users:read"]\n',
        '[needs]\npermissions = ["chit:services:admin"]\n',  # even one the token carries: chit:* takes chit:*:*
        '[needs]\npermissions = ["image-store:images:delete"]\n',
        '[needs]\npermissions = ["image-store:*:*"]\n',
        '[on_behalf]\npermissions = ["image-store:images:write"]\n',
        '[on_behalf]\npermissions = ["chit:*:*"]\n',
        '[on_behalf]\npermissions = ["tagging:tags:write"]\ndeferred = ["tagging:tags:write"]\n',
    ],
)
def test_a_manifest_cannot_need_what_its_registrant_neither_holds_nor_administers(
    chit: ChitServer, registrar: Api, admin: Api, extra: str
) -> None:
    service_id = unique("evil")
    headers = rid("manifest")
    r = registrar.put(f"/admin/services/{service_id}", {"manifest": manifest(service_id, extra)}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    assert "client_secret" not in r.text
    assert service_id not in registered_services(admin)
    clients = {c["client_id"] for c in admin.get("/admin/clients").json()["clients"]}
    assert service_id not in clients
    # no client to speak of: the same answer as for any made-up client and secret
    assert_error(client_credentials(chit, service_id, "any-secret-at-all"), 401, "invalid_client")
    event = assert_refusal_audited(admin, headers, registrar.subject, "service.register")
    assert event["detail"]["manifest"] == service_id


def test_the_evil_manifest_of_the_finding_is_refused(chit: ChitServer, registrar: Api, admin: Api) -> None:
    text = manifest("evil", '[needs]\npermissions = ["chit:*:*"]\n')
    headers = rid("evil")
    r = registrar.put("/admin/services/evil", {"manifest": text}, headers=headers)
    assert_error(r, 403, "insufficient_scope", "chit:*:*")
    assert "client_secret" not in r.text
    assert "evil" not in registered_services(admin)
    assert_error(client_credentials(chit, "evil", "whatever"), 401, "invalid_client")
    assert_refusal_audited(admin, headers, registrar.subject, "service.register")


def test_a_service_admin_may_list_what_he_administers(chit: ChitServer, admin: Api) -> None:
    """Administering suffices: a services admin who also administers image-store may list its permissions."""
    chit.cli_ok(
        "role",
        "create",
        "image-registrar",
        "--permission",
        "chit:services:admin",
        "--permission",
        "chit:service.image-store:admin",
    )
    new_user(chit, "image-registrar-user", "image-registrar")
    api = user_api(chit, "image-registrar-user")
    service_id = unique("thumbs")
    text = manifest(service_id, '[needs]\npermissions = ["image-store:images:delete"]\n')
    r = api.put(f"/admin/services/{service_id}", {"manifest": text})
    assert r.status_code == 200, r.text
    cc = client_credentials(chit, service_id, r.json()["client_secret"])
    assert cc.status_code == 200, cc.text
    assert cc.json()["scope"] == "image-store:images:delete"
    # but not tagging's, nor the auth server's
    other = unique("thumbs")
    text = manifest(other, '[needs]\npermissions = ["tagging:tags:read"]\n')
    assert_error(api.put(f"/admin/services/{other}", {"manifest": text}), 403, "insufficient_scope")
    text = manifest(other, '[needs]\npermissions = ["chit:service.image-store:admin"]\n')
    assert_error(api.put(f"/admin/services/{other}", {"manifest": text}), 403, "insufficient_scope")
    assert other not in registered_services(admin)


def test_the_super_admin_registers_a_manifest_with_needs(chit: ChitServer, admin: Api) -> None:
    service_id = unique("viewer-svc")
    text = manifest(service_id, '[needs]\npermissions = ["image-store:images:read"]\n')
    r = admin.put(f"/admin/services/{service_id}", {"manifest": text})
    assert r.status_code == 200, r.text
    secret = r.json()["client_secret"]
    assert secret
    assert service_id in registered_services(admin)
    cc = client_credentials(chit, service_id, secret)
    assert cc.status_code == 200, cc.text
    assert cc.json()["scope"] == "image-store:images:read"


# 2. API keys beyond the presenting token ---------------------------------------------------------


@pytest.mark.parametrize("wanted", [["chit:*:*"], ["chit:api-keys:write"], ["chit:users:read", "chit:users:write"]])
def test_a_narrow_token_creates_no_wider_api_key(bot: Api, admin: Api, wanted: list[str]) -> None:
    before = admin_key_ids(admin)
    headers = rid("wide-key")
    r = bot.post("/admin/api-keys", {"owner": "admin", "scope": wanted}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    assert "api_key" not in r.json()
    assert admin_key_ids(admin) == before
    event = assert_refusal_audited(admin, headers, admin.subject, "api_key.create")
    assert event["detail"]["scope"] == sorted(wanted)
    assert event["client_id"] == "gateway"


def test_a_narrow_token_creates_a_key_as_narrow_as_itself(bot: Api, admin: Api, gateway: Edge) -> None:
    """The control: what the token carries, it may hand on."""
    before = admin_key_ids(admin)
    r = bot.post("/admin/api-keys", {"owner": "admin", "scope": ["chit:users:read"]})
    assert r.status_code == 201, r.text
    assert admin_key_ids(admin) == before | {r.json()["id"]}
    assert claims_of(gateway.token_for(r.json()["api_key"]))["scope"] == "chit:users:read"


def test_a_narrow_token_creates_no_key_for_anyone_else(chit: ChitServer, bot: Api, admin: Api) -> None:
    new_user(chit, "bot-victim", "image-store:viewer")
    headers = rid("other-owner")
    r = bot.post("/admin/api-keys", {"owner": "bot-victim", "scope": ["image-store:images:read"]}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    listed = admin.get("/admin/api-keys", params={"owner": "bot-victim"}).json()["api_keys"]
    assert listed == []
    assert_refusal_audited(admin, headers, admin.subject, "api_key.create")


# 3. rotating or revoking another key through a narrow token --------------------------------------


def test_a_narrow_token_cannot_rotate_list_or_revoke_a_wider_key(
    bot: Api, admin: Api, gateway: Edge, narrow_key: dict[str, Any]
) -> None:
    wide = create_key(admin, "admin", "chit:*:*")
    assert claims_of(gateway.token_for(wide["api_key"]))["scope"] == "chit:*:*"

    made_up = "key_" + "x" * 22
    headers = rid("rotate-wide")
    r = bot.post(f"/admin/api-keys/{wide['id']}/rotate", headers=headers)
    assert_error(r, 404, "not_found")
    assert "api_key" not in r.json()
    same_but_for_the_id(r, wide["id"], bot.post(f"/admin/api-keys/{made_up}/rotate"), made_up)
    assert_refusal_audited(admin, headers, admin.subject, "api_key.rotate")
    # the old secret still works: nothing was rotated
    assert claims_of(gateway.token_for(wide["api_key"]))["scope"] == "chit:*:*"

    r = bot.get("/admin/api-keys", params={"owner": "admin"})
    assert r.status_code == 200, r.text
    listed = {k["id"]: k for k in r.json()["api_keys"]}
    assert wide["id"] not in listed
    assert narrow_key["id"] in listed  # it lists what it could have created
    assert all(k["scope"] == ["chit:users:read"] for k in listed.values()), listed
    assert "secret_hash" not in r.text
    assert wide["id"] in admin_key_ids(admin)

    headers = rid("revoke-wide")
    r = bot.delete(f"/admin/api-keys/{wide['id']}", headers=headers)
    assert_error(r, 404, "not_found")
    same_but_for_the_id(r, wide["id"], bot.delete(f"/admin/api-keys/{made_up}"), made_up)
    assert_refusal_audited(admin, headers, admin.subject, "api_key.revoke")
    assert claims_of(gateway.token_for(wide["api_key"]))["scope"] == "chit:*:*"
    wide_listed = {k["id"]: k for k in admin.get("/admin/api-keys", params={"owner": "admin"}).json()["api_keys"]}
    assert wide_listed[wide["id"]]["revoked_at"] is None


def test_a_narrow_token_rotates_a_key_as_narrow_as_itself(bot: Api, admin: Api, gateway: Edge) -> None:
    """The control: the 404 above is about the key's width, not about rotating at all."""
    key = create_key(admin, "admin", "chit:users:read")
    r = bot.post(f"/admin/api-keys/{key['id']}/rotate")
    assert r.status_code == 200, r.text
    assert gateway.exchange(key["api_key"]).json()["error"] == "invalid_grant"
    assert claims_of(gateway.token_for(r.json()["api_key"]))["scope"] == "chit:users:read"


# 4. escaping a client's cap ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_admin(chit: ChitServer) -> Api:
    """The super admin, logged in through a public password client capped to image-store:images:read."""
    chit.cli_ok("client", "add", "capped", "--grant", "password", "--public", "--scope", "image-store:images:read")
    token = access_token(login(chit, "admin", ADMIN_PASSWORD, client_id="capped"))
    claims = claims_of(token)
    assert claims["scope"] == ""
    assert claims["aud"] == ["chit"]
    assert claims["client_id"] == "capped"
    return Api(chit, token)


def test_a_capped_clients_token_does_not_carry_its_users_permissions(capped_admin: Api, admin: Api) -> None:
    before = admin_key_ids(admin)
    headers = rid("capped-key")
    r = capped_admin.post("/admin/api-keys", {"owner": "admin", "scope": ["chit:*:*"]}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    assert admin_key_ids(admin) == before
    event = assert_refusal_audited(admin, headers, admin.subject, "api_key.create")
    assert event["client_id"] == "capped"

    headers = rid("capped-users")
    assert_error(capped_admin.get("/admin/users", headers=headers), 403, "insufficient_scope")
    assert_refusal_audited(admin, headers, admin.subject, "user.list")

    grants_before = admin.get("/admin/grants").json()["grants"]
    for principal in ("admin", "capped-victim"):
        headers = rid("capped-grant")
        r = capped_admin.post("/admin/grants", {"principal": principal, "role": "chit:super-admin"}, headers=headers)
        assert_error(r, 403, "insufficient_scope")
        assert_refusal_audited(admin, headers, admin.subject, "grant.add")
    assert admin.get("/admin/grants").json()["grants"] == grants_before


# 6. revoking an API key ends the tokens exchanged from it ----------------------------------------


def test_revoking_an_api_key_ends_its_exchanged_tokens(chit: ChitServer, admin: Api, gateway: Edge) -> None:
    chit.cli_ok("role", "create", "signing-key-reader", "--permission", "chit:keys:read")
    new_user(chit, "key-bot-owner", "signing-key-reader")
    key = create_key(admin, "key-bot-owner", "chit:keys:read")
    token = gateway.token_for(key["api_key"])
    claims = claims_of(token)
    assert claims["sid"] == key["id"]
    assert claims["scope"] == "chit:keys:read"
    bot = Api(chit, token)
    assert bot.get("/admin/keys").status_code == 200
    before = gateway.introspect(token)
    assert before["active"] is True
    assert before["scope"] == "chit:keys:read"

    r = admin.delete(f"/admin/api-keys/{key['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True}

    assert gateway.introspect(token) == INACTIVE
    assert_error(bot.get("/admin/keys"), 401, "invalid_token")
    assert gateway.exchange(key["api_key"]).json()["error"] == "invalid_grant"


# 7. refusals leave a trace -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_admin(chit: ChitServer, admin: Api) -> Api:
    """A service admin of image-store, appointed over the API by the super admin."""
    new_user(chit, "image-admin")
    r = admin.post("/admin/service-admins", {"username": "image-admin", "service": "image-store"})
    assert r.status_code == 200, r.text
    assert r.json() == {"appointed": True}
    api = user_api(chit, "image-admin")
    assert api.token is not None
    assert claims_of(api.token)["scope"] == "chit:service.image-store:admin"
    return api


def test_a_service_admin_cannot_make_himself_super_admin_and_it_is_audited(image_admin: Api, admin: Api) -> None:
    headers = rid("self-super")
    r = image_admin.post("/admin/grants", {"principal": "image-admin", "role": "chit:super-admin"}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    event = assert_refusal_audited(admin, headers, image_admin.subject, "grant.add")
    assert event["detail"]["role"] == "chit:super-admin"
    grants = admin.get("/admin/grants").json()["grants"]
    assert not [g for g in grants if "image-admin" in g["principal"] and g["role"] == "chit:super-admin"]
    assert claims_of(user_api(image_admin.chit, "image-admin").token or "")["scope"] == (
        "chit:service.image-store:admin"
    )


def test_a_service_admin_cannot_appoint_himself_elsewhere_and_it_is_audited(image_admin: Api, admin: Api) -> None:
    headers = rid("self-appoint")
    r = image_admin.post("/admin/service-admins", {"username": "image-admin", "service": "tagging"}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    event = assert_refusal_audited(admin, headers, image_admin.subject, "admin.appoint")
    assert event["detail"]["service_id"] == "tagging"
    assert "chit:service.tagging:admin" not in claims_of(user_api(image_admin.chit, "image-admin").token or "")["scope"]


def test_a_service_admin_cannot_read_the_audit_log_and_it_is_audited(image_admin: Api, admin: Api) -> None:
    headers = rid("read-audit")
    r = image_admin.get("/admin/audit", headers=headers)
    assert_error(r, 403, "insufficient_scope", "chit:audit:read")
    assert "events" not in r.json()
    assert_refusal_audited(admin, headers, image_admin.subject, "audit.read")


def test_a_service_admin_grants_his_own_services_roles(chit: ChitServer, image_admin: Api) -> None:
    """The control: a service admin is not refused everything."""
    new_user(chit, "image-viewer-to-be")
    r = image_admin.post("/admin/grants", {"principal": "image-viewer-to-be", "role": "image-store:viewer"})
    assert r.status_code == 200, r.text
    assert r.json() == {"granted": True}


@pytest.mark.parametrize("authorization", ["Bearer garbage", "Bearer a.b.c"])
def test_a_garbage_token_leaves_a_trace(chit: ChitServer, admin: Api, authorization: str) -> None:
    headers = rid("garbage")
    r = httpx.get(chit.url + "/admin/users", headers={"Authorization": authorization, **headers}, timeout=30)
    assert_error(r, 401, "invalid_token")
    event = refusal(admin, headers)
    assert event["actors"] == []
    assert event["detail"]["operation"] == "GET /admin/users"
    assert event["detail"]["status"] == 401


def test_a_malformed_body_leaves_a_trace(image_admin: Api, admin: Api) -> None:
    headers = rid("bad-body")
    r = image_admin.post("/admin/grants", {"principal": 5, "role": ["x"], "until": 1}, headers=headers)
    assert_error(r, 400, "invalid_request")
    event = assert_refusal_audited(admin, headers, image_admin.subject, "POST /admin/grants")
    assert event["detail"]["status"] == 400


def test_a_body_that_is_not_json_leaves_a_trace(image_admin: Api, admin: Api) -> None:
    headers = rid("not-json")
    r = image_admin.request(
        "POST",
        "/admin/users",
        content=b'{"username": "admin-user-from-junk", not json',
        headers={"Content-Type": "application/json", **headers},
    )
    assert_error(r, 400, "invalid_request", "JSON")
    event = refusal(admin, headers)
    assert event["detail"]["operation"] == "POST /admin/users"
    assert event["detail"]["status"] == 400
    assert "JSON" in event["detail"]["reason"]
    assert "admin-user-from-junk" not in [u["username"] for u in admin.get("/admin/users").json()["users"]]


def test_a_body_that_is_not_json_is_audited_with_whoever_sent_it(image_admin: Api, admin: Api) -> None:
    headers = rid("not-json-actor")
    r = image_admin.request(
        "POST", "/admin/users", content=b"{not json", headers={"Content-Type": "application/json", **headers}
    )
    assert_error(r, 400, "invalid_request")
    assert_refusal_audited(admin, headers, image_admin.subject, "POST /admin/users")


# 8. existence oracles ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nobody(chit: ChitServer, admin: Api) -> Api:
    """A user with no permissions at all."""
    new_user(chit, "powerless")
    api = user_api(chit, "powerless")
    assert api.token is not None
    claims = claims_of(api.token)
    assert (claims["aud"], claims["scope"]) == (["chit"], "")
    return api


def test_listing_keys_does_not_tell_whether_an_owner_exists(nobody: Api) -> None:
    real = nobody.get("/admin/api-keys", params={"owner": "admin"})
    made_up = nobody.get("/admin/api-keys", params={"owner": "nobody-by-this-name"})
    assert_error(real, 403, "insufficient_scope")
    same_answer(real, made_up)


def test_granting_does_not_tell_whether_a_principal_exists(nobody: Api) -> None:
    real = nobody.post("/admin/grants", {"principal": "admin", "role": "image-store:viewer"})
    made_up = nobody.post("/admin/grants", {"principal": "nobody-by-this-name", "role": "image-store:viewer"})
    assert_error(real, 403, "insufficient_scope")
    same_answer(real, made_up)
    # nor whether a role exists
    no_role = nobody.post("/admin/grants", {"principal": "admin", "role": "image-store:no-such-role"})
    assert_error(no_role, 403, "insufficient_scope")
    expected = real.json()["error_description"].replace("image-store:viewer", "image-store:no-such-role")
    assert no_role.json()["error_description"] == expected


def test_revoking_a_session_does_not_tell_whether_it_exists(chit: ChitServer, admin: Api, nobody: Api) -> None:
    victim_id = new_user(chit, "session-victim")
    assert login(chit, "session-victim", "session-victim-password").status_code == 200
    sessions = admin.get("/admin/sessions").json()["sessions"]
    real_id = next(s["id"] for s in sessions if s["user_id"] == victim_id)
    made_up_id = "rtf_" + "x" * 22
    real = nobody.delete(f"/admin/sessions/{real_id}")
    made_up = nobody.delete(f"/admin/sessions/{made_up_id}")
    assert_error(real, 404, "not_found")
    same_but_for_the_id(real, real_id, made_up, made_up_id)
    still = {s["id"]: s for s in admin.get("/admin/sessions").json()["sessions"]}
    assert still[real_id]["revoked_at"] is None


def test_rotating_a_key_does_not_tell_whether_it_exists(admin: Api, nobody: Api, gateway: Edge) -> None:
    key = create_key(admin, "admin", "chit:users:read")
    made_up_id = "key_" + "x" * 22
    real = nobody.post(f"/admin/api-keys/{key['id']}/rotate")
    made_up = nobody.post(f"/admin/api-keys/{made_up_id}/rotate")
    assert_error(real, 404, "not_found")
    same_but_for_the_id(real, key["id"], made_up, made_up_id)
    assert "api_key" not in real.json()
    assert gateway.exchange(key["api_key"]).status_code == 200


@pytest.mark.parametrize("who", ["nobody", "image_admin"])
def test_a_refused_grant_does_not_list_the_roles_permissions(
    request: pytest.FixtureRequest, who: str, admin: Api
) -> None:
    caller: Api = request.getfixturevalue(who)
    for role in ("payment:payer", "payment:reader"):
        r = caller.post("/admin/grants", {"principal": "admin", "role": role})
        assert_error(r, 403, "insufficient_scope")
        assert "charges" not in r.text, r.text
    # the super admin may read roles: a refusal may name their permissions to him, and the role does hold them
    roles = {role["name"]: role for role in admin.get("/admin/roles").json()["roles"]}
    assert "payment:charges:create" in roles["payment:payer"]["permissions"]


# 9. hostile numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["since", "until", "after"])
@pytest.mark.parametrize("value", ["10000000000000000000000000", str(2**63), "-1"])
def test_huge_audit_bounds_are_400_not_500(chit: ChitServer, admin: Api, parameter: str, value: str) -> None:
    assert_error(admin.get("/admin/audit", params={parameter: value}), 400, "invalid_request", parameter)
    assert httpx.get(chit.url + "/healthz", timeout=30).status_code == 200
    assert admin.get("/admin/audit", params={"limit": 1}).status_code == 200


@pytest.mark.parametrize("parameter", ["since", "until", "after"])
def test_the_largest_audit_bound_is_accepted(admin: Api, parameter: str) -> None:
    r = admin.get("/admin/audit", params={parameter: str(2**63 - 1), "limit": 1})
    assert r.status_code == 200, r.text
    # nothing happened after the end of int64 time nor has such a seq; everything happened before it
    assert len(r.json()["events"]) == (1 if parameter == "until" else 0)


# 10. re-enabling a user does not revive refresh tokens -------------------------------------------


def test_re_enabling_a_user_does_not_revive_old_tokens(chit: ChitServer, gateway: Edge) -> None:
    name = unique("re-enabled")
    new_user(chit, name, "image-store:viewer")
    first = login(chit, name, f"{name}-password")
    assert first.status_code == 200, first.text
    old_access = first.json()["access_token"]
    # the control: before the disable, the session refreshes and the token is active
    second = refresh(chit, first.json()["refresh_token"])
    assert second.status_code == 200, second.text
    old_refresh = second.json()["refresh_token"]
    assert gateway.introspect(old_access)["active"] is True

    chit.cli_ok("user", "disable", name)
    chit.cli_ok("user", "enable", name)
    time.sleep(1.2)  # times are whole seconds: what is issued now is after the disable

    r = refresh(chit, old_refresh)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_grant"
    assert gateway.introspect(old_access) == INACTIVE
    assert gateway.introspect(second.json()["access_token"]) == INACTIVE

    fresh = login(chit, name, f"{name}-password")
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["scope"] == "image-store:images:read"
    assert gateway.introspect(fresh.json()["access_token"])["active"] is True
    renewed = refresh(chit, fresh.json()["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert gateway.introspect(renewed.json()["access_token"])["active"] is True


# attack our own work: the narrow-token creation, at once -----------------------------------------


def test_twenty_concurrent_wide_key_creations_through_a_narrow_token_all_fail(bot: Api, admin: Api) -> None:
    before = admin_key_ids(admin)
    barrier = threading.Barrier(20)
    request_ids = [rid("race") for _ in range(20)]

    def attack(headers: dict[str, str]) -> httpx.Response:
        barrier.wait()
        return bot.post("/admin/api-keys", {"owner": "admin", "scope": ["chit:*:*"]}, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(attack, request_ids))
    assert [r.status_code for r in responses] == [403] * 20, [r.text for r in responses]
    assert all(r.json()["error"] == "insufficient_scope" for r in responses)
    assert not any("api_key" in r.json() for r in responses)
    assert admin_key_ids(admin) == before
    for headers in request_ids:
        assert_refusal_audited(admin, headers, admin.subject, "api_key.create")
