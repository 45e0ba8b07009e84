"""Chits at the revocation (RFC 7009) and introspection (RFC 7662) endpoints of a real ``chit serve``.

Revoking a chit revokes its last block's revocation id: the chit as minted takes every chit attenuated
from it along, an attenuated chit leaves its parent active. Only the client the chit was minted for
revokes it; one revocation is one ``chit.revoked`` event however often or concurrently it is asked for;
a forged, foreign or garbage chit answers 200 and changes nothing. Introspection answers what the
authority block states, and ``{"active": false}`` once any block is revoked or the subject is disabled.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import biscuit_auth
import httpx
import pytest
from helpers import (
    TOKEN_EXCHANGE,
    ChitServer,
    ModuleServers,
    ServiceClient,
    access_token,
    at_once,
    audit_events,
    claims_of,
    register_service,
    user_token,
)

import chit as chit_sdk

BISCUIT_TYPE = "urn:chit:token-type:biscuit"
DISCOVERY = "/.well-known/oauth-authorization-server"
PASSWORD = "chit-revocation-password-1"
INACTIVE = {"active": False}

IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:read" = "Read"
"images:write" = "Write"
[roles]
owner = ["images:read", "images:write"]
[on_behalf]
permissions = ["image-store:images:write"]
"""


class Setup:
    def __init__(self, chit: ChitServer, image_store: ServiceClient, webapp: ServiceClient, other: ServiceClient):
        self.chit, self.image_store, self.webapp, self.other = chit, image_store, webapp, other
        doc = httpx.get(chit.url + DISCOVERY, timeout=30).json()
        self.root_keys: dict[int, str] = {key["id"]: key["public_key"] for key in doc["biscuit_root_keys"]}
        self.issuer: str = doc["issuer"]
        self.users = 0

    def new_user(self) -> str:
        """A new user holding the image store's owner role: their username."""
        self.users += 1
        username = f"user{self.users}"
        self.chit.add_user(username, PASSWORD, "--role", "image-store:owner")
        return username

    def mint(self, username: str, client: ServiceClient | None = None) -> str:
        """A chit of the user's token: for the webapp, of its own login; for ``client``, acting for the user."""
        if client is None:
            login = {"grant_type": "password", "username": username, "password": PASSWORD}
            client, user = self.webapp, access_token(self.webapp.post("/oauth2/token", login))
        else:
            user = user_token(self.chit, username, PASSWORD)
        response = client.exchange(user, requested_token_type=BISCUIT_TYPE)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def parse(self, token: str) -> Any:
        return biscuit_auth.Biscuit.from_base64(token, lambda key_id: biscuit_auth.PublicKey(self.root_keys[key_id]))

    def attenuate(self, token: str, service: str = "x") -> str:
        block = biscuit_auth.BlockBuilder("check if service({s});", {"s": service})
        attenuated: str = self.parse(token).append(block).to_base64()
        return attenuated

    def revocation_ids(self, token: str) -> list[str]:
        return list(self.parse(token).revocation_ids)

    def revoked_events(self, revocation_id: str) -> list[dict[str, Any]]:
        return [e for e in audit_events(self.chit, "chit.revoked") if e["detail"].get("revocation_id") == revocation_id]


@pytest.fixture(scope="module")
def setup(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    chit = module_server("chit-revocation")
    directory: Path = tmp_path_factory.mktemp("manifests")
    image_store = register_service(chit, directory, "image-store", IMAGE_STORE)
    clients = {}
    for name in ("webapp", "other"):
        secret = chit.add_client(name, "--grant", "password", "--grant", TOKEN_EXCHANGE)["client_secret"]
        clients[name] = ServiceClient(chit, name, secret)
    return Setup(chit, image_store, clients["webapp"], clients["other"])


def test_an_active_chit_introspects_as_its_authority_block_states(setup: Setup) -> None:
    username = setup.new_user()
    user = user_token(setup.chit, username, PASSWORD)
    token = setup.mint(username)
    answer = setup.webapp.introspect(token)
    members = {"active", "sub", "client_id", "scope", "exp", "iat", "iss", "aud", "jti", "token_type"}
    assert set(answer) == members | {"chit_revocation_ids"}  # an access token's members (DESIGN §4), and its ids
    assert answer["active"] is True
    assert answer["aud"] == ["image-store"]
    assert setup.revocation_ids(token)[0].startswith(answer["jti"])
    assert answer["iat"] <= time.time() < answer["exp"]
    assert answer["sub"] == claims_of(user)["sub"]
    assert answer["client_id"] == "webapp"
    assert answer["scope"] == "image-store:images:read image-store:images:write"
    assert answer["iss"] == setup.issuer
    assert answer["token_type"] == "Bearer"
    assert answer["exp"] == pytest.approx(claims_of(user)["exp"], abs=5)  # the login it was minted from: as long
    assert answer["chit_revocation_ids"] == setup.revocation_ids(token)
    # any confidential client may introspect it, as an access token
    assert setup.other.introspect(token)["active"] is True
    attenuated = setup.attenuate(token)
    assert setup.webapp.introspect(attenuated)["chit_revocation_ids"] == setup.revocation_ids(attenuated)


def test_an_attenuated_lifetime_ends_the_chit_at_introspection_too(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    minted_exp = setup.webapp.introspect(token)["exp"]
    shorter = chit_sdk.attenuate(token, ttl=60, public_keys=setup.root_keys)
    answer = setup.webapp.introspect(shorter)
    assert answer["active"] is True
    assert answer["exp"] == pytest.approx(time.time() + 60, abs=5)
    assert answer["exp"] < minted_exp
    expired = chit_sdk.attenuate(token, ttl=10, now=time.time() - 60, public_keys=setup.root_keys)
    assert setup.webapp.introspect(expired) == INACTIVE
    assert setup.webapp.introspect(token)["active"] is True  # its parent lives on


def test_revoking_the_session_a_chit_was_minted_from_ends_it(setup: Setup) -> None:
    """The chit carries its login's ``session``: revoking the login's refresh token ends the chit too."""
    username = setup.new_user()
    login = {"grant_type": "password", "username": username, "password": PASSWORD, "client_id": "chit-cli"}
    answer = httpx.post(setup.chit.token_url, data=login, timeout=30).json()
    chit = access_token(setup.image_store.exchange(answer["access_token"], requested_token_type=BISCUIT_TYPE))
    assert setup.webapp.introspect(chit)["active"] is True
    revoked = {"token": answer["refresh_token"], "client_id": "chit-cli"}
    assert httpx.post(setup.chit.url + "/oauth2/revoke", data=revoked, timeout=30).status_code == 200
    assert setup.webapp.introspect(chit) == INACTIVE


def test_a_chit_minted_by_a_service_acting_for_a_user_introspects_with_act(setup: Setup) -> None:
    username = setup.new_user()
    token = setup.mint(username, setup.image_store)
    answer = setup.webapp.introspect(token)
    assert answer["active"] is True
    assert answer["client_id"] == "image-store"
    account = claims_of(setup.image_store.own_token())["sub"]
    assert answer["act"] == {"sub": account, "client_id": "image-store"}


def test_revoking_the_minted_chit_revokes_it_and_every_chit_attenuated_from_it(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    attenuated = setup.attenuate(token)
    twice = setup.attenuate(attenuated, "y")
    assert setup.webapp.introspect(twice)["active"] is True
    response = setup.webapp.revoke(token, token_type_hint="access_token")
    assert response.status_code == 200, response.text
    for each in (token, attenuated, twice):
        assert setup.webapp.introspect(each) == INACTIVE
    [event] = setup.revoked_events(setup.revocation_ids(token)[0])
    assert event["client_id"] == "webapp"
    assert event["token_id"] == setup.revocation_ids(token)[0][:64]
    assert event["detail"]["via"] == "revocation endpoint"


def test_revoking_an_attenuated_chit_leaves_its_parent_active(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    attenuated = setup.attenuate(token)
    sibling = setup.attenuate(token, "y")
    below = setup.attenuate(attenuated, "z")
    assert setup.webapp.revoke(attenuated).status_code == 200
    assert setup.webapp.introspect(attenuated) == INACTIVE
    assert setup.webapp.introspect(below) == INACTIVE
    assert setup.webapp.introspect(token)["active"] is True
    assert setup.webapp.introspect(sibling)["active"] is True
    assert setup.revoked_events(setup.revocation_ids(attenuated)[-1])
    assert not setup.revoked_events(setup.revocation_ids(token)[0])


def test_revoking_twice_records_one_event(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    for hint in ("", "refresh_token"):
        response = setup.webapp.revoke(token, **({"token_type_hint": hint} if hint else {}))
        assert response.status_code == 200, response.text
    assert len(setup.revoked_events(setup.revocation_ids(token)[0])) == 1


def test_concurrent_revocations_record_one_event(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    responses = at_once(20, lambda _: setup.webapp.revoke(token))
    assert [r.status_code for r in responses] == [200] * 20
    assert setup.webapp.introspect(token) == INACTIVE
    assert len(setup.revoked_events(setup.revocation_ids(token)[0])) == 1


def test_another_client_cannot_revoke_a_chit(setup: Setup) -> None:
    token = setup.mint(setup.new_user())
    for each in (token, setup.attenuate(token)):
        response = setup.other.revoke(each)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "unauthorized_client"
        assert setup.webapp.introspect(each)["active"] is True
    assert not setup.revoked_events(setup.revocation_ids(token)[0])


def foreign_chit(setup: Setup) -> str:
    """A chit stating this server's vocabulary, signed by another root key under this server's key id."""
    builder = biscuit_auth.BiscuitBuilder(
        "issuer({iss}); subject({sub}); client({client}); right({right}); check if time($t), $t <= {exp};",
        {
            "iss": setup.issuer,
            "sub": "usr_someone",
            "client": "webapp",
            "right": "image-store:images:read",
            "exp": datetime.fromtimestamp(time.time() + 300, UTC),
        },
    )
    builder.set_root_key_id(min(setup.root_keys))
    token: str = builder.build(biscuit_auth.KeyPair().private_key).to_base64()
    return token


def test_a_garbage_forged_or_foreign_chit_answers_200_and_changes_nothing(setup: Setup) -> None:
    before = len(audit_events(setup.chit, "chit.revoked"))
    token = setup.mint(setup.new_user())
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for bad in ("garbage", "EgAAAA==", flipped, foreign_chit(setup)):
        response = setup.webapp.revoke(bad)
        assert response.status_code == 200, response.text
        assert setup.webapp.introspect(bad) == INACTIVE
    assert len(audit_events(setup.chit, "chit.revoked")) == before
    assert setup.webapp.introspect(token)["active"] is True


def test_disabling_the_user_makes_the_chit_inactive(setup: Setup) -> None:
    username = setup.new_user()
    token = setup.mint(username)
    attenuated = setup.attenuate(token)
    assert setup.webapp.introspect(attenuated)["active"] is True
    setup.chit.cli_ok("user", "disable", username)
    assert setup.webapp.introspect(token) == INACTIVE
    assert setup.webapp.introspect(attenuated) == INACTIVE
    setup.chit.cli_ok("user", "enable", username)
    assert setup.webapp.introspect(token) == INACTIVE  # enabling revives nothing issued before
