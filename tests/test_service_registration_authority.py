"""Registering a service is one authority, changing a registered one another.

``chit:services:admin`` registers new services. A registered service's roles are held by its users, its
key signs what other services trust as coming through it, and its ``[needs]``/``[on_behalf]`` are its
own client's rights: changing any of that, replacing its key or removing it also takes administering
that service (``chit:service.<id>:admin``), decided in the registration's transaction. Each test sends
the actual request of a services admin who does not administer the service.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ROOT, Api, ChitServer, ModuleServers, as_user, assert_error, claims_of

from chit.core.service_keys import new_key_pair

PHOTOS = ROOT / "examples" / "photos"
EVERY_IMAGE_PERMISSION = '["images:read", "images:read-any", "images:write", "images:delete", "images:moderate"]'


def widened_image_store() -> str:
    """image-store's manifest with its viewer role holding everything, and no [needs] or [on_behalf]."""
    text = (PHOTOS / "image-store.toml").read_text()
    head = text.split("[needs]", 1)[0]
    return head.replace('viewer = ["images:read"]', f"viewer = {EVERY_IMAGE_PERMISSION}")


def plain_manifest(service_id: str, extra: str = "") -> str:
    return (
        f'id = "{service_id}"\ndescription = "plain"\n\n[permissions]\n"things:read" = "Read a thing"\n'
        f'"things:write" = "Write a thing"\n\n[roles]\nreader = ["things:read"]\n' + extra
    )


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    server = module_server("service-authority", manifests=[PHOTOS / "image-store.toml", PHOTOS / "tagging.toml"])
    server.cli_ok("role", "create", "registrar", "--permission", "chit:services:admin")
    server.add_user("registrar", "registrar-password", "--role", "registrar")
    server.add_user("alice", "alice-password", "--role", "image-store:viewer")
    return server


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    return as_user(chit, "admin", ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def registrar(chit: ChitServer) -> Api:
    api = as_user(chit, "registrar", "registrar-password")
    assert api.token is not None
    assert claims_of(api.token)["scope"] == "chit:services:admin"
    return api


def service(admin: Api, service_id: str) -> dict[str, Any]:
    r = admin.get("/admin/services")
    assert r.status_code == 200, r.text
    (found,) = [s for s in r.json()["services"] if s["id"] == service_id]
    return dict(found)


def scope_of(chit: ChitServer, username: str) -> str:
    token = as_user(chit, username, f"{username}-password").token
    assert token is not None
    scope: str = claims_of(token)["scope"]
    return scope


def registered_plain(admin: Api) -> str:
    service_id = f"plain-{uuid.uuid4().hex[:8]}"
    r = admin.put(f"/admin/services/{service_id}", {"manifest": plain_manifest(service_id)})
    assert r.status_code == 200, r.text
    return service_id


def test_a_services_admin_cannot_widen_another_services_roles_replace_its_key_or_drop_its_needs(
    chit: ChitServer, admin: Api, registrar: Api
) -> None:
    before = service(admin, "image-store")
    attacker = new_key_pair()
    body = {"manifest": widened_image_store(), "public_key": attacker.public_key}
    r = registrar.put("/admin/services/image-store", body)
    assert_error(r, 403, "insufficient_scope", "chit:service.image-store:admin")
    assert "client_secret" not in r.text
    assert service(admin, "image-store") == before  # roles, needs, on_behalf and key as they were
    assert scope_of(chit, "alice") == "image-store:images:read"
    published = httpx.get(chit.url + "/.well-known/chit-service-keys", timeout=30).json()["keys"]
    keys = {k["service"]: k["public_key"] for k in published}
    assert keys["image-store"] == before["public_key"] != attacker.public_key


def test_the_refusal_is_audited(admin: Api, registrar: Api) -> None:
    headers = {"X-Request-ID": f"widen-{uuid.uuid4().hex}"}
    r = registrar.put("/admin/services/image-store", {"manifest": widened_image_store()}, headers=headers)
    assert_error(r, 403, "insufficient_scope")
    answer = admin.get("/admin/audit", params={"type": "admin.refused", "request_id": headers["X-Request-ID"]})
    (event,) = answer.json()["events"]
    assert event["outcome"] == "failure"
    assert event["actors"] == [registrar.subject]
    assert event["detail"]["operation"] == "service.register"
    assert event["detail"]["manifest"] == "image-store"


def test_registering_a_service_as_it_is_again_changes_nothing_and_is_allowed(admin: Api, registrar: Api) -> None:
    service_id = registered_plain(admin)
    r = registrar.put(f"/admin/services/{service_id}", {"manifest": plain_manifest(service_id)})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False


def test_a_services_admin_cannot_put_his_key_in_place_of_a_services_own(admin: Api, registrar: Api) -> None:
    service_id = registered_plain(admin)
    own = service(admin, service_id)["public_key"]
    attacker = new_key_pair()
    body = {"manifest": plain_manifest(service_id), "public_key": attacker.public_key}
    assert_error(registrar.put(f"/admin/services/{service_id}", body), 403, "insufficient_scope")
    assert service(admin, service_id)["public_key"] == own


def test_a_services_admin_cannot_change_a_registered_service(admin: Api, registrar: Api) -> None:
    service_id = registered_plain(admin)
    before = service(admin, service_id)
    widened = plain_manifest(service_id).replace('reader = ["things:read"]', 'reader = ["things:read", "things:write"]')
    assert_error(registrar.put(f"/admin/services/{service_id}", {"manifest": widened}), 403, "insufficient_scope")
    assert service(admin, service_id) == before


def test_a_services_admin_cannot_remove_a_service_he_does_not_administer(admin: Api, registrar: Api) -> None:
    service_id = registered_plain(admin)
    assert_error(registrar.delete(f"/admin/services/{service_id}"), 403, "insufficient_scope")
    assert service(admin, service_id)["id"] == service_id
    assert admin.delete(f"/admin/services/{service_id}").status_code == 200  # its administrator may


def test_a_new_service_is_still_the_services_admins_to_register(admin: Api, registrar: Api) -> None:
    service_id = f"fresh-{uuid.uuid4().hex[:8]}"
    r = registrar.put(f"/admin/services/{service_id}", {"manifest": plain_manifest(service_id)})
    assert r.status_code == 200, r.text
    assert r.json()["created"] is True
    assert service(admin, service_id)["id"] == service_id


def test_whoever_administers_the_service_changes_it(chit: ChitServer, admin: Api) -> None:
    service_id = registered_plain(admin)
    role = f"keeper-{service_id}"
    permissions = ["--permission", "chit:services:admin", "--permission", f"chit:service.{service_id}:admin"]
    chit.cli_ok("role", "create", role, *permissions)
    chit.add_user(role, f"{role}-password", "--role", role)
    keeper = as_user(chit, role, f"{role}-password")
    widened = plain_manifest(service_id).replace('reader = ["things:read"]', 'reader = ["things:read", "things:write"]')
    r = keeper.put(f"/admin/services/{service_id}", {"manifest": widened})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    assert service(admin, service_id)["roles"][f"{service_id}:reader"] == [
        f"{service_id}:things:read",
        f"{service_id}:things:write",
    ]
    pair = new_key_pair()
    body = {"manifest": widened, "public_key": pair.public_key}
    assert keeper.put(f"/admin/services/{service_id}", body).status_code == 200
    assert service(admin, service_id)["public_key"] == pair.public_key
