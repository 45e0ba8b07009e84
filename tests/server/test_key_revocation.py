"""A signing key compromise: ``chit keys rotate --now --revoke-old`` against the data directory of a running
``chit serve``.

The rotation leaves only new keys in the key set, and the server looks at the set whenever it uses a
key: as soon as the command returns, the old JWT key is gone from the JWKS, the old chit root key from
discovery, the server signs with the new ones and refuses whatever the old ones signed (introspection,
token exchange, the admin API); a ``key`` event for each (the kid, ``root-<id>``) is in the revocation
feed. A plain rotation keeps old tokens valid.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    TOKEN_EXCHANGE,
    Api,
    ChitServer,
    ServiceClient,
    access_token,
    as_user,
    assert_error,
    audit_events,
    login,
    register_service,
    run_cli,
)

from chit.core.keys import check_algorithm
from chit.storage.keyfiles import KeyStore

JWKS = "/.well-known/jwks.json"
DISCOVERY = "/.well-known/oauth-authorization-server"
BISCUIT_TYPE = "urn:chit:token-type:biscuit"
PASSWORD = "key-revocation-password-1"
IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:read" = "Read"
[roles]
viewer = ["images:read"]
"""


class Installation(NamedTuple):
    chit: ChitServer
    image_store: ServiceClient  # a registered service: it introspects and reads the feed
    webapp: ServiceClient  # a first-party client that logs its users in and mints chits of their tokens

    def user_token(self) -> str:
        login = {"grant_type": "password", "username": "carol", "password": PASSWORD}
        return access_token(self.webapp.post("/oauth2/token", login))

    def mint(self, user_token: str) -> httpx.Response:
        return self.webapp.exchange(user_token, requested_token_type=BISCUIT_TYPE)

    def feed(self) -> list[dict[str, Any]]:
        """Every event of ``GET /oauth2/revocations``, read as a service reads it."""
        grant = {"grant_type": "client_credentials", "scope": "chit:revocations:read"}
        token = access_token(self.image_store.post("/oauth2/token", grant))
        response = httpx.get(
            self.chit.url + "/oauth2/revocations",
            params={"after": 0},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture
def installation(server: ChitServer, tmp_path: Path) -> Installation:
    image_store = register_service(server, tmp_path, "image-store", IMAGE_STORE)
    secret = server.add_client("webapp", "--grant", "password", "--grant", TOKEN_EXCHANGE)["client_secret"]
    server.add_user("carol", PASSWORD, "--role", "image-store:viewer")
    return Installation(server, image_store, ServiceClient(server, "webapp", secret))


def jwks_kids(chit: ChitServer) -> set[str]:
    return {key["kid"] for key in httpx.get(chit.url + JWKS, timeout=30).json()["keys"]}


def root_key_ids(chit: ChitServer) -> set[int]:
    return {key["id"] for key in httpx.get(chit.url + DISCOVERY, timeout=30).json()["biscuit_root_keys"]}


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def test_revoking_the_old_keys_refuses_what_they_signed_and_tells_every_service(installation: Installation) -> None:
    chit, image_store = installation.chit, installation.image_store
    old_user = installation.user_token()
    old_kid = kid_of(old_user)
    minted = installation.mint(old_user)
    assert minted.status_code == 200, minted.text
    old_chit = minted.json()["access_token"]
    old_admin = Api(chit, access_token(login(chit, "admin", ADMIN_PASSWORD)))
    old_service = image_store.own_token()
    assert image_store.introspect(old_user)["active"] is True
    assert image_store.introspect(old_chit)["active"] is True
    [old_root] = root_key_ids(chit)

    started = int(time.time())
    rotated = chit.cli_ok("keys", "rotate", "--now", "--revoke-old", "--json").json()
    assert rotated["previous_kid"] == old_kid
    assert rotated["revoked"] == [old_kid, f"root-{old_root}"]
    new_kid = rotated["kid"]

    assert jwks_kids(chit) == {new_kid}  # at once: no wait for the server to notice
    assert root_key_ids(chit) == {rotated["biscuit_root_key_id"]}

    # the server refuses what the old keys signed, wherever it is presented
    for token in (old_user, old_chit, old_service):
        assert image_store.introspect(token) == {"active": False}
    exchanged = installation.mint(old_user)
    assert exchanged.status_code == 400, exchanged.text
    refused = old_admin.get("/admin/users")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_token"

    # what the new keys sign works
    new_user = installation.user_token()
    assert kid_of(new_user) == new_kid
    assert image_store.introspect(new_user)["active"] is True
    new_chit = installation.mint(new_user)
    assert new_chit.status_code == 200, new_chit.text
    assert image_store.introspect(new_chit.json()["access_token"])["active"] is True
    assert Api(chit, access_token(login(chit, "admin", ADMIN_PASSWORD))).get("/admin/users").status_code == 200

    # every service is told: one key event per retired key, revoking whatever it signed until now
    key_events = [e for e in installation.feed() if e["kind"] == "key"]
    assert [e["value"] for e in key_events] == [old_kid, f"root-{old_root}"]
    for event in key_events:
        assert started < event["not_before"] <= int(time.time()) + 1
        assert event["expires"] >= event["not_before"]

    [audited] = [e for e in audit_events(chit, "keys.rotated") if e["detail"]["kid"] == new_kid]
    assert audited["detail"]["revoked"] == [old_kid, f"root-{old_root}"]
    assert audited["detail"]["immediate"] is True


def test_a_plain_rotation_keeps_old_tokens_valid(installation: Installation) -> None:
    chit, image_store = installation.chit, installation.image_store
    old_user = installation.user_token()
    old_kid = kid_of(old_user)
    old_chit = installation.mint(old_user).json()["access_token"]

    rotated = chit.cli_ok("keys", "rotate", "--now", "--json").json()
    assert "revoked" not in rotated
    assert jwks_kids(chit) == {old_kid, rotated["kid"]}
    assert kid_of(installation.user_token()) == rotated["kid"]

    assert image_store.introspect(old_user)["active"] is True
    assert image_store.introspect(old_chit)["active"] is True
    assert installation.mint(old_user).status_code == 200
    assert [e for e in installation.feed() if e["kind"] == "key"] == []


def test_revoke_old_without_now_is_a_usage_error_that_changes_nothing(installation: Installation) -> None:
    chit = installation.chit
    keyset = (chit.data_dir / "keys" / "keyset.json").read_bytes()
    result = chit.cli("keys", "rotate", "--revoke-old")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--revoke-old" in result.stderr
    assert "--now" in result.stderr
    assert (chit.data_dir / "keys" / "keyset.json").read_bytes() == keyset
    assert [e for e in installation.feed() if e["kind"] == "key"] == []


def test_revoke_old_is_refused_before_the_data_directory_is_touched(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-created"
    result = run_cli("keys", "rotate", "--revoke-old", "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert not data_dir.exists()


# the key set itself --------------------------------------------------------------------------------


def test_retiring_leaves_only_the_new_keys_and_deletes_every_earlier_file(tmp_path: Path) -> None:
    keystore = KeyStore(tmp_path, timedelta(seconds=900))
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert keystore.initialize(check_algorithm("EdDSA"), now)
    # an upcoming key, published but not signing yet: its file is as exposed as the signing one's
    upcoming = keystore.rotate(check_algorithm("EdDSA"), now, delay=timedelta(seconds=300))
    first = keystore.load()
    old_kids = {k.kid for k in first.ring.keys}
    assert upcoming.signing_key.kid in old_kids
    assert len(old_kids) == 2

    rotation = keystore.rotate(
        check_algorithm("ES256"), now + timedelta(seconds=10), delay=timedelta(0), retire_previous=True
    )
    assert {k.kid for k in rotation.retired_keys} == old_kids
    assert [k.id for k in rotation.retired_root_keys] == [2, 1]
    assert [k.revocation_value for k in rotation.retired_root_keys] == ["root-2", "root-1"]
    loaded = keystore.load()
    assert [k.kid for k in loaded.ring.keys] == [rotation.signing_key.kid]
    assert loaded.ring.signing_key(now + timedelta(seconds=10)).kid == rotation.signing_key.kid
    assert [k.id for k in loaded.root_keys] == [3]
    assert sorted(p.name for p in keystore.dir.iterdir() if not p.name.startswith(".")) == sorted(
        ["keyset.json", f"jwt-{rotation.signing_key.kid}.pem", "biscuit-3.key"]
    )

    with pytest.raises(ValueError, match="at once"):
        keystore.rotate(check_algorithm("EdDSA"), now, delay=timedelta(seconds=1), retire_previous=True)


def test_the_admin_api_revokes_the_old_keys_too(installation: Installation) -> None:
    admin = as_user(installation.chit, "admin", ADMIN_PASSWORD)
    assert_error(admin.post("/admin/keys/rotate", {"revoke_old": True}), 400, "invalid_request", "--now")
    old = installation.user_token()
    answer = admin.post("/admin/keys/rotate", {"now": True, "revoke_old": True})
    assert answer.status_code == 200, answer.text
    revoked = answer.json()["revoked"]
    assert json.loads(base64.urlsafe_b64decode(old.split(".")[0] + "==")).get("kid") in revoked
    assert installation.image_store.introspect(old) == {"active": False}
    assert {e["value"] for e in installation.feed() if e["kind"] == "key"} >= set(revoked)
