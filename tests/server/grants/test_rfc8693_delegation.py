"""Delegation by token exchange (RFC 8693, DESIGN §4) against a real ``chit serve``: a service acting
for a user now, later (deferred handles) and by impersonation; every refusal of DESIGN §4's list sent
as the actual bad request; the audit trail of each chain.

The services: the image store and the tagging service act for users (``[on_behalf]``); the archiver
is a plain service account; relays r1..r5 pass a token along to test the depth limit.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import (
    ACCESS_TOKEN_TYPE,
    DEFERRED_DELEGATION_TYPE,
    TOKEN_EXCHANGE,
    ChitServer,
    ModuleServers,
    ServiceClient,
    access_token,
    audit_events,
    claims_of,
    free_port,
    login,
    register_manifest,
    register_service,
    user_token,
)

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
PASSWORD = "delegation-password-1"
RELAYS = ["r1", "r2", "r3", "r4", "r5"]

IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:read" = "Read"
"images:write" = "Write"
"images:delete" = "Delete"
[roles]
owner = ["images:read", "images:write", "images:delete"]
[on_behalf]
permissions = ["tagging:tags:write", "image-store:images:write"]
deferred = ["tagging:tags:write"]
"""
TAGGING = """\
id = "tagging"
[permissions]
"tags:read" = "Read tags"
"tags:write" = "Write tags"
[roles]
editor = ["tags:read", "tags:write"]
[on_behalf]
permissions = ["image-store:images:write"]
"""
ARCHIVER = """\
id = "archiver"
[permissions]
"runs:read" = "Read archive runs"
[needs]
permissions = ["image-store:images:read"]
"""


def relay(name: str) -> str:
    hops = ", ".join(f'"{r}:hop:go"' for r in RELAYS)
    return f'id = "{name}"\n[permissions]\n"hop:go" = "Pass it on"\n[on_behalf]\npermissions = [{hops}]\n'


@dataclass
class World:
    chit: ChitServer
    services: dict[str, ServiceClient]

    def __getitem__(self, name: str) -> ServiceClient:
        return self.services[name]

    def user_token(self, username: str = "alice") -> str:
        return user_token(self.chit, username, PASSWORD)

    def audit(self, type: str, limit: int = 200) -> list[dict[str, Any]]:
        return audit_events(self.chit, type, limit)


@pytest.fixture(scope="module")
def world(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> World:
    chit = module_server("delegation")
    directory = tmp_path_factory.mktemp("manifests")
    services = {
        name: register_service(chit, directory, name, text)
        for name, text in [("image-store", IMAGE_STORE), ("tagging", TAGGING), ("archiver", ARCHIVER)]
        + [(r, relay(r)) for r in RELAYS]
    }
    chit.cli_ok("role", "create", "relay-all", *(arg for r in RELAYS for arg in ("--permission", f"{r}:hop:go")))
    for name in ("alice", "bob"):
        chit.add_user(name, PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor", "--role", "relay-all")
    chit.add_user("nobody", PASSWORD)  # holds nothing a service could act on
    chit.add_user("carol", PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    return World(chit, services)


def assert_error(response: httpx.Response, error: str, status: int = 400, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert fragment in body.get("error_description", ""), body
    assert response.headers["cache-control"] == "no-store"


# --- now, for a user --------------------------------------------------------------------------------


def test_an_exchange_makes_the_service_the_actor_and_narrows_the_scope(world: World) -> None:
    user = world.user_token()
    answer = world["image-store"].exchange(user)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    subject, issued = claims_of(user), claims_of(body["access_token"])
    assert issued["sub"] == subject["sub"]
    assert issued["client_id"] == "image-store"
    image_store_account = claims_of(world["image-store"].own_token())["sub"]
    assert issued["act"] == {"sub": image_store_account, "client_id": "image-store"}
    # alice's five permissions ∩ the image store's [on_behalf]
    assert body["scope"] == issued["scope"] == "image-store:images:write tagging:tags:write"
    assert issued["aud"] == ["image-store", "tagging"]
    assert issued["exp"] <= subject["exp"]
    assert issued["sid"] == subject["sid"]  # logging out ends it (see below)


def test_the_jwt_subject_token_type_is_accepted_too(world: World) -> None:
    answer = world["image-store"].exchange(world.user_token(), subject_token_type=JWT_TYPE)
    assert answer.status_code == 200, answer.text


def test_re_exchanging_nests_the_chain_current_actor_outermost(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    assert claims_of(for_tagging)["aud"] == ["tagging"]
    # the audience narrows where the token goes, not what it carries: tagging can pass it on
    assert claims_of(for_tagging)["scope"] == "image-store:images:write tagging:tags:write"
    back = claims_of(world["tagging"].token(for_tagging, audience="image-store"))
    assert back["scope"] == "image-store:images:write"
    assert back["aud"] == ["image-store"]
    assert back["client_id"] == "tagging"
    assert back["act"]["client_id"] == "tagging"
    assert back["act"]["act"]["client_id"] == "image-store"
    assert "act" not in back["act"]["act"]


def test_introspection_answers_the_chain(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    back = world["tagging"].token(for_tagging)
    answer = world["archiver"].introspect(back)
    assert answer["active"] is True
    assert [answer["act"]["client_id"], answer["act"]["act"]["client_id"]] == ["tagging", "image-store"]


def test_a_requested_scope_narrows_and_a_wider_one_is_invalid_scope(world: World) -> None:
    user = world.user_token()
    assert claims_of(world["image-store"].token(user, scope="tagging:tags:write"))["scope"] == "tagging:tags:write"
    # alice holds tags:read, but the image store may not exercise it for her
    assert_error(world["image-store"].exchange(user, scope="tagging:tags:read"), "invalid_scope")
    assert_error(world["image-store"].exchange(user, scope="image-store:images:delete"), "invalid_scope")
    assert_error(world["image-store"].exchange(user, scope="image-store:images:*"), "invalid_scope")


def test_a_user_holding_nothing_the_service_may_exercise_gets_invalid_scope(world: World) -> None:
    nobody = world.user_token("nobody")
    # nobody's token carries no image-store permission, so it does not even name the image store
    assert_error(world["image-store"].exchange(nobody), "invalid_request", fragment="not addressed")
    for_tagging = world["image-store"].token(world.user_token(), scope="tagging:tags:write")
    assert_error(world["tagging"].exchange(for_tagging), "invalid_scope")  # tags:write ∩ images:write = nothing


def test_what_the_user_no_longer_holds_is_not_delegated(world: World) -> None:
    user = world.user_token("carol")
    world.chit.cli_ok("revoke-grant", "user:carol", "tagging:editor")
    try:
        assert claims_of(world["image-store"].token(user))["scope"] == "image-store:images:write"
    finally:
        world.chit.cli_ok("grant", "user:carol", "tagging:editor")


def test_a_change_the_cli_makes_reaches_the_very_next_exchange(world: World) -> None:
    """The server answers exchanges from the users, clients, services and grants it read before, while
    the directory's version stays put: a grant revoked, given back or a user disabled by ``chit`` in a
    process of its own moves it, and the next exchange reads afresh."""
    world.chit.add_user("erin", PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    user, image_store = world.user_token("erin"), world["image-store"]
    for _ in range(3):  # read once, then answered from what the server remembers
        assert claims_of(image_store.token(user))["scope"] == "image-store:images:write tagging:tags:write"
    world.chit.cli_ok("revoke-grant", "user:erin", "tagging:editor")
    assert claims_of(image_store.token(user))["scope"] == "image-store:images:write"
    world.chit.cli_ok("grant", "user:erin", "tagging:editor")
    assert claims_of(image_store.token(user))["scope"] == "image-store:images:write tagging:tags:write"
    world.chit.cli_ok("user", "disable", "erin")
    assert_error(image_store.exchange(user), "invalid_request", fragment="revoked")


def test_audience_and_resource_narrow_the_audience_and_name_only_reachable_services(world: World) -> None:
    user = world.user_token()
    assert claims_of(world["image-store"].token(user, resource="tagging"))["aud"] == ["tagging"]
    two = httpx.post(
        world.chit.token_url,
        content=f"grant_type={TOKEN_EXCHANGE}&subject_token={user}&subject_token_type={ACCESS_TOKEN_TYPE}"
        "&audience=tagging&audience=image-store",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=world["image-store"].auth,
    )
    assert claims_of(access_token(two))["aud"] == ["image-store", "tagging"]
    assert_error(world["image-store"].exchange(user, audience="nowhere"), "invalid_target", fragment="no registered")
    assert_error(world["image-store"].exchange(user, audience="archiver"), "invalid_target")
    spaced = world["image-store"].exchange(user, audience="tagging image-store")
    assert_error(spaced, "invalid_request")


# --- refusals, each the actual bad request ---------------------------------------------------------------


def test_no_or_failed_client_authentication_is_invalid_client(world: World) -> None:
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": world.user_token(), "subject_token_type": ACCESS_TOKEN_TYPE}
    assert_error(httpx.post(world.chit.token_url, data=data), "invalid_client", 401)
    assert_error(httpx.post(world.chit.token_url, data=data, auth=("image-store", "wrong")), "invalid_client", 401)


def test_a_client_without_the_grant_or_not_a_service_is_unauthorized_client(world: World) -> None:
    user = world.user_token()
    # the archiver lists no [on_behalf]: its client has no token-exchange grant at all
    assert_error(world["archiver"].exchange(user), "unauthorized_client")
    gateway = world.chit.add_client("delegation-gateway", "--grant", TOKEN_EXCHANGE)
    plain = ServiceClient(world.chit, "delegation-gateway", gateway["client_secret"])
    assert_error(plain.exchange(user), "unauthorized_client", fragment="may not act for users")


def test_a_subject_token_for_another_audience_is_invalid_request(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    # the image store cannot exchange a token addressed to tagging only, even one it obtained itself
    assert_error(world["image-store"].exchange(for_tagging), "invalid_request", fragment="not addressed to image-store")
    archived = world["archiver"].own_token()  # a service account's token, naming the image store
    assert_error(world["image-store"].exchange(archived), "invalid_request", fragment="not a user's")


@pytest.mark.parametrize(
    "subject_token", ["garbage", "a.b.c", "", "chit_ak_key_x.y", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."]
)
def test_a_malformed_subject_token_is_invalid_request(world: World, subject_token: str) -> None:
    answer = world["image-store"].exchange(subject_token)
    assert_error(answer, "invalid_request")


def test_a_forged_subject_token_is_invalid_request(world: World) -> None:
    claims = claims_of(world.user_token())
    header = json.loads(base64.urlsafe_b64decode(world.user_token().split(".")[0] + "=="))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    assert_error(world["image-store"].exchange(forged), "invalid_request", fragment="not a valid access token")
    claims["scope"] += " image-store:images:delete"  # widened, signature kept
    head, _, signature = world.user_token().split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert_error(world["image-store"].exchange(f"{head}.{body}.{signature}"), "invalid_request")


def test_a_token_of_another_chit_server_is_invalid_request(world: World, tmp_path: Path) -> None:
    with ChitServer(tmp_path / "other", free_port()).running() as other:
        register_manifest(other, tmp_path, "image-store", IMAGE_STORE)
        other.add_user("alice", PASSWORD, "--role", "image-store:owner")
        foreign = user_token(other, "alice", PASSWORD)
    assert_error(world["image-store"].exchange(foreign), "invalid_request")


def test_a_revoked_subject_token_is_invalid_request_and_logout_ends_what_was_exchanged(world: World) -> None:
    login_answer = login(world.chit, "bob", PASSWORD)
    user, refresh_token = access_token(login_answer), login_answer.json()["refresh_token"]
    exchanged = world["image-store"].token(user)
    revoke = httpx.post(
        world.chit.url + "/oauth2/revoke", data={"token": refresh_token, "client_id": "chit-cli"}, timeout=30
    )
    assert revoke.status_code == 200
    assert_error(world["image-store"].exchange(user), "invalid_request", fragment="revoked")
    assert world["archiver"].introspect(exchanged) == {"active": False}


def test_an_expired_subject_token_is_invalid_request(tmp_path: Path) -> None:
    with ChitServer(tmp_path / "data", free_port(), extra_env={"CHIT_ACCESS_TOKEN_TTL": "3"}).running() as chit:
        service = register_service(chit, tmp_path, "image-store", IMAGE_STORE)
        register_manifest(chit, tmp_path, "tagging", TAGGING)
        chit.add_user("alice", PASSWORD, "--role", "image-store:owner")
        for _attempt in range(3):  # a busy machine may take the short lifetime between login and exchange
            user = user_token(chit, "alice", PASSWORD)
            answer = service.exchange(user)
            if answer.status_code == 200:
                break
        exchanged = claims_of(access_token(answer))
        assert exchanged["exp"] <= claims_of(user)["exp"]  # never beyond the token it came from
        time.sleep(max(0.0, claims_of(user)["exp"] - time.time()) + 1.2)
        assert_error(service.exchange(user), "invalid_request", fragment="expired")


def test_an_actor_token_must_be_the_exchanging_clients_own(world: World) -> None:
    user = world.user_token()
    own = world["image-store"].own_token()
    with_own = world["image-store"].exchange(user, actor_token=own, actor_token_type=ACCESS_TOKEN_TYPE)
    assert claims_of(access_token(with_own))["act"]["client_id"] == "image-store"
    for forged in [world["tagging"].own_token(), user, "garbage", world["image-store"].token(user)]:
        answer = world["image-store"].exchange(user, actor_token=forged, actor_token_type=ACCESS_TOKEN_TYPE)
        assert_error(answer, "invalid_request", fragment="actor_token")
    assert_error(world["image-store"].exchange(user, actor_token=own), "invalid_request")  # no type
    assert_error(
        world["image-store"].exchange(user, actor_token=own, actor_token_type=DEFERRED_DELEGATION_TYPE),
        "invalid_request",
    )


def test_act_and_may_act_sent_as_parameters_or_headers_are_ignored(world: World) -> None:
    smuggled = json.dumps({"sub": "usr_admin", "client_id": "chit-cli", "act": {"sub": "x"}})
    answer = httpx.post(
        world.chit.token_url,
        data={
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": world.user_token(),
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "act": smuggled,
            "may_act": smuggled,
            "sub": "usr_admin",
            "client_id": "image-store",
        },
        headers={"act": smuggled, "may_act": smuggled, "X-Act": smuggled},
        auth=world["image-store"].auth,
    )
    issued = claims_of(access_token(answer))
    assert issued["act"] == {"sub": claims_of(world["image-store"].own_token())["sub"], "client_id": "image-store"}
    assert issued["sub"] == claims_of(world.user_token())["sub"]


def test_a_chain_past_the_depth_limit_is_invalid_request(world: World) -> None:
    token = world.user_token()
    for current, following in itertools.pairwise(RELAYS):
        token = world[current].token(token, audience=following)
    assert len(chain(claims_of(token))) == 4
    assert_error(world["r5"].exchange(token), "invalid_request", fragment="at most 4")


def test_a_service_already_in_the_chain_is_a_cycle(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    back = world["tagging"].token(for_tagging, audience="image-store")
    assert_error(world["image-store"].exchange(back), "invalid_request", fragment="a cycle")


def test_unsupported_token_types_are_invalid_request(world: World) -> None:
    user = world.user_token()
    service = world["image-store"]
    assert_error(service.exchange(user, subject_token_type="urn:x:unknown"), "invalid_request")
    assert_error(
        service.exchange(user, requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"), "invalid_request"
    )
    assert_error(service.exchange(user, requested_token_type="urn:chit:token-type:unknown"), "invalid_request")
    assert_error(
        service.exchange(None, subject_token_type=ACCESS_TOKEN_TYPE), "invalid_request", fragment="subject_token"
    )


def test_twenty_concurrent_exchanges_each_get_their_own_equally_narrow_token(world: World) -> None:
    user = world.user_token()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: world["image-store"].exchange(user, audience="tagging"), range(20)))
    claims = [claims_of(access_token(a)) for a in answers]
    assert len({c["jti"] for c in claims}) == 20
    assert {c["scope"] for c in claims} == {"image-store:images:write tagging:tags:write"}


# --- later, for a user ---------------------------------------------------------------------------------


def test_a_deferred_delegation_is_an_opaque_handle_redeemed_later_for_a_short_token(world: World) -> None:
    user = world.user_token()
    created = world["image-store"].defer(user, job_id="tag:sunset", expires_in="3600")
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["issued_token_type"] == DEFERRED_DELEGATION_TYPE
    assert body["token_type"] == "N_A"
    assert body["expires_in"] == 3600
    assert body["scope"] == "tagging:tags:write"  # the manifest's deferred list, not all of on_behalf
    handle = body["access_token"]
    assert handle.startswith("chit_dd_dlg_")
    assert "." in handle
    redeemed = world["image-store"].redeem(handle)
    assert redeemed.status_code == 200, redeemed.text
    claims = claims_of(access_token(redeemed))
    assert claims["sub"] == claims_of(user)["sub"]
    assert claims["act"]["client_id"] == "image-store"
    assert claims["scope"] == "tagging:tags:write"
    assert claims["sid"] == handle.removeprefix("chit_dd_").split(".")[0]
    assert "refresh_token" not in redeemed.json()
    # the handle is stored hashed: the secret is nowhere in the data directory
    secret = handle.split(".", 1)[1]
    assert not [p for p in world.chit.data_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_another_service_cannot_redeem_someones_handle(world: World) -> None:
    handle = world["image-store"].defer(world.user_token()).json()["access_token"]
    assert_error(world["tagging"].redeem(handle), "invalid_request", fragment="another service")
    assert_error(world["image-store"].redeem(handle + "x"), "invalid_request", fragment="invalid")
    assert_error(world["image-store"].redeem("chit_dd_dlg_nosuch.secret"), "invalid_request")
    assert world["image-store"].redeem(handle).status_code == 200


def test_deferred_input_is_checked(world: World) -> None:
    user = world.user_token()
    for bad in ({"expires_in": "0"}, {"expires_in": "604801"}, {"expires_in": "soon"}, {"expires_in": "9" * 40}):
        assert_error(world["image-store"].defer(user, **bad), "invalid_request", fragment="expires_in")
    assert_error(world["image-store"].defer(user, job_id="j" * 201), "invalid_request", fragment="job_id")
    assert_error(world["image-store"].defer(user, audience="tagging"), "invalid_request", fragment="redeemed")
    assert_error(world["image-store"].defer(user, scope="image-store:images:write"), "invalid_scope")  # not in deferred
    for_tagging = world["image-store"].token(user, audience="tagging")
    assert_error(
        world["tagging"].exchange(for_tagging, requested_token_type=DEFERRED_DELEGATION_TYPE), "unauthorized_client"
    )


def test_a_redemption_narrows_to_what_the_user_holds_then(world: World) -> None:
    handle = world["image-store"].defer(world.user_token("carol")).json()["access_token"]
    world.chit.cli_ok("revoke-grant", "user:carol", "tagging:editor")
    try:
        assert_error(world["image-store"].redeem(handle), "invalid_scope")
    finally:
        world.chit.cli_ok("grant", "user:carol", "tagging:editor")
    assert claims_of(access_token(world["image-store"].redeem(handle)))["scope"] == "tagging:tags:write"


def test_an_expired_handle_is_refused_and_its_tokens_never_outlive_it(world: World) -> None:
    created = world["image-store"].defer(world.user_token(), expires_in="2")
    token = claims_of(access_token(world["image-store"].redeem(created.json()["access_token"])))
    assert token["exp"] <= token["iat"] + 2
    time.sleep(2.5)
    assert_error(world["image-store"].redeem(created.json()["access_token"]), "invalid_request", fragment="expired")


def test_disabling_the_user_ends_the_handle(world: World) -> None:
    world.chit.add_user("dave", PASSWORD, "--role", "tagging:editor", "--role", "image-store:owner")
    handle = world["image-store"].defer(world.user_token("dave")).json()["access_token"]
    redeemed = access_token(world["image-store"].redeem(handle))
    world.chit.cli_ok("user", "disable", "dave")
    world.chit.cli_ok("user", "enable", "dave")  # enabling again revives nothing issued before
    assert_error(world["image-store"].redeem(handle), "invalid_request", fragment="disabled")
    assert world["archiver"].introspect(redeemed) == {"active": False}


def test_twenty_concurrent_deferred_creations_make_twenty_audited_handles(world: World) -> None:
    user = world.user_token()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda n: world["image-store"].defer(user, job_id=f"burst:{n}"), range(20)))
    handles = {access_token(a) for a in answers}
    assert len(handles) == 20
    created = [e for e in world.audit("delegation.created") if str(e["detail"]["job_id"]).startswith("burst:")]
    assert sorted(e["detail"]["job_id"] for e in created) == sorted(f"burst:{n}" for n in range(20))


# --- impersonation -----------------------------------------------------------------------------------


def test_impersonation_takes_the_role_only_a_super_admin_grants(world: World) -> None:
    service = world["tagging"]
    assert_error(service.exchange(requested_subject="alice"), "unauthorized_client", fragment="chit:users:impersonate")
    # a grants admin is no super admin: the role stays out of reach
    world.chit.cli_ok("role", "create", "grants-admin", "--permission", "chit:grants:write")
    world.chit.add_user("gina", PASSWORD, "--role", "grants-admin")
    gina = world.user_token("gina")
    refused = httpx.post(
        world.chit.url + "/admin/grants",
        json={"principal": "client:tagging", "role": "chit:users:impersonate"},
        headers={"Authorization": f"Bearer {gina}"},
    )
    assert refused.status_code == 403, refused.text
    world.chit.cli_ok("grant", "client:tagging", "chit:users:impersonate")
    try:
        issued = claims_of(service.token(requested_subject="alice"))
        assert issued["sub"] == claims_of(world.user_token())["sub"]
        assert issued["act"]["client_id"] == "tagging"
        assert issued["scope"] == "image-store:images:write"  # tagging's on_behalf ∩ what alice holds
        assert_error(service.exchange(requested_subject="nosuchuser"), "invalid_request")
        both = service.exchange(world.user_token(), requested_subject="alice")
        assert_error(both, "invalid_request", fragment="requested_subject")
        event = world.audit("token.impersonated")[-1]
        assert (event["subject"], event["client_id"], event["actors"]) == (issued["sub"], "tagging", ["tagging"])
        assert event["detail"]["username"] == "alice"
    finally:
        world.chit.cli_ok("revoke-grant", "client:tagging", "chit:users:impersonate")
    assert_error(service.exchange(requested_subject="alice"), "unauthorized_client")


# --- service accounts and the audit trail ---------------------------------------------------------------


def test_a_service_accounts_token_never_carries_act_and_its_events_name_it(world: World) -> None:
    token = claims_of(world["archiver"].own_token())
    assert "act" not in token
    event = next(e for e in world.audit("token.issued") if e["token_id"] == token["jti"])
    assert (event["subject"], event["client_id"], event["actors"]) == (token["sub"], "archiver", [])


def test_the_audit_log_shows_each_chain_and_each_refusal(world: World) -> None:
    user = world.user_token()
    for_tagging = world["image-store"].token(user, audience="tagging")
    back = claims_of(world["tagging"].token(for_tagging, audience="image-store"))
    issued = {e["token_id"]: e for e in world.audit("token.issued")}
    event = issued[back["jti"]]
    assert event["actors"] == ["tagging", "image-store"]
    assert event["subject"] == claims_of(user)["sub"]
    assert event["detail"]["subject_token"] == claims_of(for_tagging)["jti"]
    world["image-store"].exchange(world["tagging"].token(for_tagging))  # the cycle, refused
    refused = world.audit("token.refused")[-1]
    assert refused["outcome"] == "failure"
    assert refused["actors"] == ["image-store", "tagging", "image-store"]
    assert refused["subject"] == claims_of(user)["sub"]
    handle = world["image-store"].defer(user, job_id="audit-job").json()["access_token"]
    world["image-store"].redeem(handle)
    created, redeemed_event = world.audit("delegation.created")[-1], world.audit("delegation.redeemed")[-1]
    assert created["detail"]["job_id"] == redeemed_event["detail"]["job_id"] == "audit-job"
    assert created["actors"] == redeemed_event["actors"] == ["image-store"]


def chain(claims: dict[str, Any]) -> list[str]:
    names, act = [], claims.get("act")
    while act:
        names.append(act["client_id"])
        act = act.get("act")
    return names
