"""Chits minted by token exchange (RFC 8693 with ``requested_token_type=urn:chit:token-type:biscuit``, DESIGN §4
"Chits on the wire") against a real ``chit serve``: from an access token presented by its own client or by a
service in its ``aud``, from an API key, from a deferred-delegation handle. Each chit is verified with
``biscuit_auth`` and the root key that discovery publishes under the chit's root key id, and its authority
block is read fact by fact: exactly the vocabulary, no wildcard right, actors numbered current first. The
scope and refusal rules are those of the JWTs the same requests would get; ``chit keys rotate`` adds a root key.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import biscuit_auth
import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    DEFERRED_DELEGATION_TYPE,
    TOKEN_EXCHANGE,
    ChitServer,
    ModuleServers,
    ServiceClient,
    access_token,
    audit_events,
    claims_of,
    register_service,
    user_token,
)

BISCUIT_TYPE = "urn:chit:token-type:biscuit"
API_KEY_TYPE = "urn:chit:token-type:api-key"
PASSWORD = "chit-minting-password-1"
DISCOVERY = "/.well-known/oauth-authorization-server"

IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:read" = "Read"
"images:write" = "Write"
[roles]
owner = ["images:read", "images:write"]
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
ALICE_PERMISSIONS = {"image-store:images:read", "image-store:images:write", "tagging:tags:read", "tagging:tags:write"}

# one line of an authority block, as biscuit prints it: the vocabulary and nothing else
VOCABULARY = re.compile(
    r'(issuer|subject|client|right|session)\("[^"]*"\);'
    r'|actor\(\d+, "[^"]*", "[^"]*"\);'
    r"|check if time\(\$t\), \$t <= \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ;"
)


@dataclass(frozen=True)
class Authority:
    """A chit verified with a published root key, and what its authority block states."""

    root_key_id: int
    source: str
    issuer: str
    subject: str
    client: str
    rights: frozenset[str]
    actors: tuple[tuple[str, str], ...]  # by their number: current first
    expires_at: int


def root_keys(chit: ChitServer) -> dict[int, str]:
    doc = httpx.get(chit.url + DISCOVERY, timeout=30).json()
    return {key["id"]: key["public_key"] for key in doc["biscuit_root_keys"]}


def verify(chit: ChitServer, token: str, keys: dict[int, str] | None = None) -> Any:
    """The chit verified with the key discovery publishes under its root key id."""
    published = root_keys(chit) if keys is None else keys
    return biscuit_auth.Biscuit.from_base64(token, lambda key_id: biscuit_auth.PublicKey(published[key_id]))


def authority(chit: ChitServer, token: str) -> Authority:
    biscuit = verify(chit, token)
    assert biscuit.block_count() == 1
    source = biscuit.block_source(0)
    lines = source.strip().splitlines()
    assert lines, source
    assert all(VOCABULARY.fullmatch(line) for line in lines), source
    authorizer = biscuit_auth.AuthorizerBuilder("allow if true;").build(biscuit)

    def terms(name: str, arity: int) -> list[list[Any]]:
        variables = ", ".join(f"$v{i}" for i in range(arity))
        rule = biscuit_auth.Rule(f"found({variables}) <- {name}({variables})")
        return sorted(fact.terms for fact in authorizer.query(rule))

    [[issuer]], [[subject]], [[client]] = terms("issuer", 1), terms("subject", 1), terms("client", 1)
    actors = terms("actor", 3)
    assert [n for n, _, _ in actors] == list(range(len(actors)))  # numbered 0.. without gaps
    assert len(terms("session", 1)) <= 1  # the session it comes from, if any (chit's addition to the vocabulary)
    [check] = [line for line in lines if line.startswith("check if")]
    expires = datetime.fromisoformat(check.removeprefix("check if time($t), $t <= ").removesuffix(";"))
    root_key_id = biscuit_auth.UnverifiedBiscuit.from_base64(token).root_key_id()
    rights = frozenset(r for [r] in terms("right", 1))
    assert not [r for r in rights if "*" in r.split(":")]  # never a wildcard right
    return Authority(
        root_key_id=root_key_id,
        source=source,
        issuer=issuer,
        subject=subject,
        client=client,
        rights=rights,
        actors=tuple((sub, client_id) for _, sub, client_id in actors),
        expires_at=int(expires.timestamp()),
    )


def chit_answer(response: httpx.Response) -> str:
    """A token response carrying a chit (DESIGN §4): its token."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}, body
    assert body["issued_token_type"] == BISCUIT_TYPE
    assert body["token_type"] == "Bearer"
    assert response.headers["cache-control"] == "no-store"
    token: str = body["access_token"]
    assert token.count(".") == 0  # not a JWT
    assert 0 < body["expires_in"] <= 600
    return token


def assert_error(response: httpx.Response, error: str, status: int = 400, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert fragment in body.get("error_description", ""), body


@dataclass
class World:
    chit: ChitServer
    short: ChitServer  # access tokens live 2 s; its root keys are rotated by a test
    services: dict[str, ServiceClient]
    webapp: ServiceClient  # a first-party client that logs users in and may exchange their tokens
    gateway: ServiceClient  # an edge client holding chit:api-keys:exchange
    issuer: str

    def __getitem__(self, name: str) -> ServiceClient:
        return self.services[name]

    def user_token(self, username: str = "alice") -> str:
        return user_token(self.chit, username, PASSWORD)

    def webapp_login(self, username: str = "alice", password: str = PASSWORD) -> str:
        data = {"grant_type": "password", "username": username, "password": password}
        return access_token(self.webapp.post("/oauth2/token", data))

    def account(self, service: str) -> str:
        sub: str = claims_of(self[service].own_token())["sub"]
        return sub


def setup_server(chit: ChitServer, directory: Path, *, full: bool) -> dict[str, ServiceClient]:
    """The services and alice; with ``full``, the archiver and a user holding nothing too."""
    manifests = [("tagging", TAGGING), ("image-store", IMAGE_STORE)] + ([("archiver", ARCHIVER)] if full else [])
    services = {name: register_service(chit, directory, name, text) for name, text in manifests}
    chit.add_user("alice", PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    if full:
        chit.add_user("nobody", PASSWORD)
    return services


@pytest.fixture(scope="module")
def world(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> World:
    servers = module_server.together("chit-minting", {"main": {}, "short": {"env": {"CHIT_ACCESS_TOKEN_TTL": "2"}}})
    chit = servers["main"]
    services = {}
    for key, server in servers.items():
        found = setup_server(server, tmp_path_factory.mktemp(f"manifests-{key}"), full=key == "main")
        services[key] = found
    webapp = ServiceClient(
        chit, "webapp", chit.add_client("webapp", "--grant", "password", "--grant", TOKEN_EXCHANGE)["client_secret"]
    )
    gateway = ServiceClient(chit, "gateway", chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"])
    chit.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
    chit.cli_ok("grant", "client:gateway", "edge")
    issuer: str = httpx.get(chit.url + DISCOVERY, timeout=30).json()["issuer"]
    world = World(chit, servers["short"], services["main"], webapp, gateway, issuer)
    world.services.update({f"short:{k}": v for k, v in services["short"].items()})
    return world


# --- discovery ---------------------------------------------------------------------------------------


def test_discovery_publishes_the_root_keys_with_their_ids(world: World) -> None:
    doc = httpx.get(world.chit.url + DISCOVERY, timeout=30).json()
    assert doc["biscuit_root_keys"] == [{"id": 1, "public_key": doc["biscuit_public_keys"][0]}]
    assert len(doc["biscuit_public_keys"]) == 1
    assert doc["biscuit_public_keys"][0].startswith("ed25519/")


# --- (a) an access token presented by the client it was issued to --------------------------------------


def test_a_client_mints_a_chit_of_its_own_users_token(world: World) -> None:
    user = world.webapp_login()
    answer = world.webapp.exchange(user, requested_token_type=BISCUIT_TYPE)
    token = chit_answer(answer)
    claims, chit = claims_of(user), authority(world.chit, token)
    assert chit.root_key_id == 1
    assert chit.issuer == world.issuer
    assert chit.subject == claims["sub"]
    assert chit.client == "webapp"
    assert chit.rights == ALICE_PERMISSIONS == set(claims["scope"].split())
    assert chit.actors == ()  # nobody acts for alice: the client holds her own token
    assert chit.expires_at <= claims["exp"]
    assert answer.json()["scope"] == " ".join(sorted(ALICE_PERMISSIONS))
    assert answer.json()["expires_in"] == pytest.approx(chit.expires_at - time.time(), abs=3)


def test_a_chit_of_ones_own_token_narrows_to_scope_and_never_widens(world: World) -> None:
    user = world.webapp_login()
    narrowed = world.webapp.exchange(user, requested_token_type=BISCUIT_TYPE, scope="tagging:tags:read")
    assert authority(world.chit, chit_answer(narrowed)).rights == {"tagging:tags:read"}
    for wider in ["chit:users:read", "archiver:runs:read", "tagging:tags:*"]:
        assert_error(world.webapp.exchange(user, requested_token_type=BISCUIT_TYPE, scope=wider), "invalid_scope")


def test_wildcard_permissions_never_go_into_a_chit(world: World) -> None:
    admin = world.webapp_login("admin", ADMIN_PASSWORD)
    assert claims_of(admin)["scope"] == "chit:*:*"
    # a token holding only chit:*:* has nothing a chit may carry, unless a concrete permission is asked for
    assert_error(world.webapp.exchange(admin, requested_token_type=BISCUIT_TYPE), "invalid_scope", fragment="'*'")
    assert_error(world.webapp.exchange(admin, requested_token_type=BISCUIT_TYPE, scope="chit:*:*"), "invalid_scope")
    concrete = world.webapp.exchange(admin, requested_token_type=BISCUIT_TYPE, scope="chit:users:read")
    assert authority(world.chit, chit_answer(concrete)).rights == {"chit:users:read"}


def test_a_service_presenting_its_own_delegated_token_keeps_the_chain_and_adds_no_actor(world: World) -> None:
    delegated = world["image-store"].token(world.user_token())
    chit = authority(
        world.chit, chit_answer(world["image-store"].exchange(delegated, requested_token_type=BISCUIT_TYPE))
    )
    assert chit.client == "image-store"
    assert chit.actors == ((world.account("image-store"), "image-store"),)
    assert chit.rights == set(claims_of(delegated)["scope"].split())


def test_a_token_addressed_to_fewer_services_gives_a_chit_with_only_their_rights(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    assert claims_of(for_tagging)["aud"] == ["tagging"]
    answer = world["image-store"].exchange(for_tagging, requested_token_type=BISCUIT_TYPE)
    assert authority(world.chit, chit_answer(answer)).rights == {"tagging:tags:write"}


def test_a_service_account_mints_a_chit_of_its_own_token(world: World) -> None:
    own = world["image-store"].own_token()
    chit = authority(world.chit, chit_answer(world["image-store"].exchange(own, requested_token_type=BISCUIT_TYPE)))
    assert (chit.subject, chit.client, chit.actors) == (world.account("image-store"), "image-store", ())
    assert chit.rights == set(claims_of(own)["scope"].split())


# --- (b) an access token presented by a service in its aud: the delegation rules ---------------------


def test_a_service_acting_for_a_user_is_the_chits_current_actor(world: World) -> None:
    user = world.user_token()
    answer = world["image-store"].exchange(user, requested_token_type=BISCUIT_TYPE)
    chit = authority(world.chit, chit_answer(answer))
    jwt = claims_of(world["image-store"].token(user))
    assert chit.subject == jwt["sub"] == claims_of(user)["sub"]
    assert chit.client == "image-store"
    assert chit.actors == ((world.account("image-store"), "image-store"),)
    assert chit.rights == set(jwt["scope"].split()) == {"image-store:images:write", "tagging:tags:write"}
    assert chit.expires_at <= claims_of(user)["exp"]


def test_a_chain_is_numbered_current_actor_first(world: World) -> None:
    for_tagging = world["image-store"].token(world.user_token(), audience="tagging")
    answer = world["tagging"].exchange(for_tagging, requested_token_type=BISCUIT_TYPE)
    chit = authority(world.chit, chit_answer(answer))
    assert chit.client == "tagging"
    assert chit.actors == ((world.account("tagging"), "tagging"), (world.account("image-store"), "image-store"))
    assert 'actor(0, "' + world.account("tagging") + '", "tagging");' in chit.source
    assert chit.rights == {"image-store:images:write"}


def test_audience_narrows_the_chits_rights(world: World) -> None:
    user = world.user_token()
    answer = world["image-store"].exchange(user, requested_token_type=BISCUIT_TYPE, audience="tagging")
    assert authority(world.chit, chit_answer(answer)).rights == {"tagging:tags:write"}
    # asked for explicitly, a right the chit's audience excludes cannot be carried (a JWT carries it, for tagging)
    both = "image-store:images:write tagging:tags:write"
    assert world["image-store"].exchange(user, audience="tagging", scope=both).status_code == 200
    outside = world["image-store"].exchange(user, requested_token_type=BISCUIT_TYPE, audience="tagging", scope=both)
    assert_error(outside, "invalid_scope", fragment="image-store:images:write")


REFUSALS: list[tuple[str, str, str]] = [
    # (case, error, a fragment of its description)
    ("scope the service may not exercise", "invalid_scope", ""),
    ("scope naming a service it may not act at", "invalid_scope", ""),
    ("garbage subject token", "invalid_request", "not a valid access token"),
    ("another server's token", "invalid_request", "not a valid access token"),
    ("token not addressed to the service", "invalid_request", "not addressed"),
    ("client without the exchange grant", "unauthorized_client", ""),
    ("client that is no service acting for users", "unauthorized_client", ""),
    ("unreachable audience", "invalid_target", ""),
    ("impersonation", "invalid_request", ""),
]


def refused_request(world: World, case: str, requested: dict[str, str]) -> httpx.Response:
    image_store = world["image-store"]
    if case == "scope the service may not exercise":
        return image_store.exchange(world.user_token(), scope="tagging:tags:read", **requested)
    if case == "scope naming a service it may not act at":
        return image_store.exchange(world.user_token(), scope="archiver:runs:read", **requested)
    if case == "garbage subject token":
        return image_store.exchange("garbage", **requested)
    if case == "another server's token":
        return image_store.exchange(user_token(world.short, "alice", PASSWORD), **requested)
    if case == "token not addressed to the service":
        return image_store.exchange(world.user_token("nobody"), **requested)
    if case == "client without the exchange grant":
        return world["archiver"].exchange(world.user_token(), **requested)
    if case == "client that is no service acting for users":
        return world.gateway.exchange(world.user_token(), **requested)
    if case == "unreachable audience":
        return image_store.exchange(world.user_token(), audience="archiver", **requested)
    assert case == "impersonation"
    return image_store.exchange(requested_subject="alice", **requested)


@pytest.mark.parametrize(("case", "error", "fragment"), REFUSALS, ids=[c for c, _, _ in REFUSALS])
def test_a_chit_is_refused_exactly_as_the_jwt_would_be(world: World, case: str, error: str, fragment: str) -> None:
    chit = refused_request(world, case, {"requested_token_type": BISCUIT_TYPE})
    if case == "impersonation":  # never a chit; the JWT answer depends on chit:users:impersonate
        assert_error(chit, error, fragment="access token only")
        return
    jwt = refused_request(world, case, {})
    assert_error(chit, error, status=401 if error == "invalid_client" else 400, fragment=fragment)
    assert (jwt.status_code, jwt.json()["error"]) == (chit.status_code, chit.json()["error"])


def short_lived_chit(world: World) -> tuple[str, str]:
    """A user's token at the server whose tokens live 2 s, and the chit its image store mints from it (asked
    again when a busy machine let the token expire before the exchange)."""
    for _ in range(5):
        user = user_token(world.short, "alice", PASSWORD)
        answer = world["short:image-store"].exchange(user, requested_token_type=BISCUIT_TYPE)
        if answer.status_code == 200:
            return user, chit_answer(answer)
    pytest.fail(f"no chit from a fresh token: {answer.text}")


def test_an_expired_subject_token_is_refused_and_a_chit_never_outlives_its_source(world: World) -> None:
    user, token = short_lived_chit(world)
    assert authority(world.short, token).expires_at <= claims_of(user)["exp"]
    time.sleep(3.2)
    answer = world["short:image-store"].exchange(user, requested_token_type=BISCUIT_TYPE)
    assert_error(answer, "invalid_request", fragment="expired")


# --- (c) an API key, exchanged by an edge client -----------------------------------------------------


def test_an_edge_client_exchanges_an_api_key_for_a_chit(world: World) -> None:
    scopes = ["--scope", "tagging:tags:write", "--scope", "tagging:tags:read"]
    key = world.chit.cli_ok("api-key", "create", "--owner", "user:alice", *scopes, "--json").json()
    alice_id = claims_of(world.user_token())["sub"]

    def exchange(client: ServiceClient, **params: str) -> httpx.Response:
        return client.exchange(
            key["api_key"], subject_token_type=API_KEY_TYPE, requested_token_type=BISCUIT_TYPE, **params
        )

    chit = authority(world.chit, chit_answer(exchange(world.gateway)))
    assert (chit.subject, chit.client, chit.actors) == (alice_id, "gateway", ())
    assert chit.rights == {"tagging:tags:write", "tagging:tags:read"}
    narrowed = authority(world.chit, chit_answer(exchange(world.gateway, scope="tagging:tags:read")))
    assert narrowed.rights == {"tagging:tags:read"}
    assert_error(exchange(world.gateway, scope="image-store:images:read"), "invalid_scope")
    assert_error(exchange(world.webapp), "unauthorized_client", fragment="chit:api-keys:exchange")
    world.chit.cli_ok("api-key", "revoke", key["id"])
    assert_error(exchange(world.gateway), "invalid_grant")  # as for a JWT


# --- (d) a deferred-delegation handle, redeemed by its service ---------------------------------------


def test_a_deferred_delegation_is_redeemed_for_a_chit_by_its_service_only(world: World) -> None:
    handle = world["image-store"].deferred_handle(world.user_token(), job_id="nightly-tags")
    chit = authority(world.chit, chit_answer(world["image-store"].redeem(handle, requested_token_type=BISCUIT_TYPE)))
    assert chit.subject == claims_of(world.user_token())["sub"]
    assert chit.client == "image-store"
    assert chit.actors == ((world.account("image-store"), "image-store"),)
    assert chit.rights == {"tagging:tags:write"}
    assert_error(
        world["tagging"].redeem(handle, requested_token_type=BISCUIT_TYPE), "invalid_request", fragment="another"
    )
    assert_error(world["image-store"].redeem(handle, requested_token_type=DEFERRED_DELEGATION_TYPE), "invalid_request")


# --- audit --------------------------------------------------------------------------------------------


def test_the_issued_event_names_the_chain_and_the_revocation_id(world: World) -> None:
    user = world.user_token()
    token = chit_answer(world["image-store"].exchange(user, requested_token_type=BISCUIT_TYPE))
    revocation_id = verify(world.chit, token).revocation_ids[0]
    [event] = [
        e for e in audit_events(world.chit, "token.issued", 50) if e["detail"].get("revocation_ids") == [revocation_id]
    ]
    assert event["client_id"] == "image-store"
    assert event["subject"] == claims_of(user)["sub"]
    assert event["actors"] == ["image-store"]
    assert event["token_id"] == revocation_id[:64]
    assert event["detail"]["format"] == "chit"
    assert event["detail"]["grant_type"] == TOKEN_EXCHANGE
    assert event["detail"]["session"] == claims_of(user)["sid"]
    assert event["detail"]["scope"] == "image-store:images:write tagging:tags:write"


# --- root key rotation --------------------------------------------------------------------------------


def test_keys_rotate_adds_a_root_key_that_mints_at_once_and_old_chits_still_verify(world: World) -> None:
    chit = world.short
    _, old = short_lived_chit(world)
    assert authority(chit, old).root_key_id == 1
    rotated = chit.cli_ok("keys", "rotate", "--json").json()
    assert rotated["biscuit_root_key_id"] == 2
    human = chit.cli_ok("keys", "rotate").stdout
    assert "chit root key 3" in human

    deadline = time.monotonic() + 5  # the server re-reads its key files within a second
    while True:
        doc = httpx.get(chit.url + DISCOVERY, timeout=30).json()
        if len(doc["biscuit_root_keys"]) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [k["id"] for k in doc["biscuit_root_keys"]] == [3, 2, 1]
    assert doc["biscuit_public_keys"] == [k["public_key"] for k in doc["biscuit_root_keys"]]  # newest first
    assert doc["biscuit_root_keys"][1]["public_key"] == rotated["biscuit_public_key"]

    _, new = short_lived_chit(world)
    assert authority(chit, new).root_key_id == 3  # the newest key mints at once
    assert authority(chit, old).root_key_id == 1  # still verifies with the old published key
    keys = root_keys(chit)
    with pytest.raises(biscuit_auth.BiscuitValidationError):
        verify(chit, new, {3: keys[1]})  # a chit verifies only with the key its id names
