"""Revocation reaches every service within a second (issue 17; DESIGN §4, "Revocation feed").

Two services on the SDK (tests/revocation_services/guarded_service.py, real uvicorn processes) follow
a real ``chit serve``: once on the embedded feed (the server-sent-events stream), once on Redis (the
real server on 127.0.0.1:6379, with the feed as catch-up). For every kind of revocation, a credential
both services accept is revoked through the way an operator or a client would, and both refuse it
within a second of the revoke call returning. A service started after the revocations refuses them
from its first request. A private Redis, stopped and started again, loses nothing; a feed cut for
longer than ``max_staleness`` refuses writes with 503 and serves reads, and recovers.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from helpers import (
    IN_CI,
    TOKEN_EXCHANGE,
    ChitServer,
    ServiceClient,
    ServiceProcess,
    access_token,
    claims_of,
    delegation_id,
    free_port,
    login,
    register_service,
    user_token,
)

BOUND = 1.0  # seconds from the revoke call's answer to the refusal at every service
PASSWORD = "revocation-reaches-services"
SERVICES_DIR = Path(__file__).parent / "revocation_services"
REDIS_URL = "redis://127.0.0.1:6379/0"
BISCUIT_TYPE = "urn:chit:token-type:biscuit"
API_KEY_TYPE = "urn:chit:token-type:api-key"
DEFERRED_TYPE = "urn:chit:token-type:deferred-delegation"


def guarded(name: str) -> str:
    return f"""\
id = "{name}"
[permissions]
"things:read" = "Read things"
"things:write" = "Write things"
[roles]
user = ["things:read", "things:write"]
"""


CALLER = """\
id = "caller"
[permissions]
"calls:read" = "Nothing anyone needs"
[needs]
permissions = ["svc-a:things:read", "svc-b:things:read"]
"""
JOBS = """\
id = "jobs"
[permissions]
"runs:read" = "See one's jobs"
[roles]
user = ["runs:read"]
[on_behalf]
permissions = ["svc-a:things:read", "svc-b:things:read"]
deferred = ["svc-a:things:read", "svc-b:things:read"]
"""


def redis_reachable(url: str = REDIS_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@dataclass
class World:
    backend: str
    chit: ChitServer
    directory: Path
    secrets: dict[str, str]
    webapp: ServiceClient
    gateway: ServiceClient
    jobs: ServiceClient
    redis_url: str | None
    services: list[ServiceProcess] = field(default_factory=list)
    users: int = 0
    roles: tuple[str, ...] = ("svc-a:user", "svc-b:user", "jobs:user")

    def start_service(self, name: str, **env: str) -> ServiceProcess:
        process = ServiceProcess(
            "guarded_service",
            SERVICES_DIR,
            free_port(),
            self.directory / f"{name}-{len(self.services)}.log",
            env={
                "CHIT_ISSUER": self.chit.url,
                "SERVICE_ID": name,
                "SERVICE_CLIENT_SECRET": self.secrets[name],
                "REDIS_URL": self.redis_url or "",
                **env,
            },
        )
        process.start()
        self.services.append(process)
        return process

    def new_user(self) -> str:
        self.users += 1
        name = f"{self.backend}-user-{self.users}"
        self.chit.add_user(name, PASSWORD, *(a for role in self.roles for a in ("--role", role)))
        return name

    def token(self, username: str) -> str:
        return user_token(self.chit, username, PASSWORD)

    def chit_of(self, username: str) -> str:
        """A chit the webapp mints of its own login of the user."""
        login = {"grant_type": "password", "username": username, "password": PASSWORD}
        own = access_token(self.webapp.post("/oauth2/token", login))
        return access_token(self.webapp.exchange(own, requested_token_type=BISCUIT_TYPE))


def reads(service: ServiceProcess, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(service.url + "/things", headers=headers, timeout=10).status_code


def accepted_by_both(world: World, token: str) -> None:
    a, b = world.services[:2]
    assert (reads(a, token), reads(b, token)) == (200, 200)
    # a second time from the verified-token cache, which must be consulted against the list as well
    assert (reads(a, token), reads(b, token)) == (200, 200)


def refused_by_both_within(world: World, token: str, revoked_at: float, bound: float = BOUND) -> list[float]:
    """Poll both services until each refuses ``token``; each one's delay after ``revoked_at``."""

    def until_refused(service: ServiceProcess) -> float:
        deadline = revoked_at + bound + 5  # keep polling past the bound, to report how late it was
        while time.monotonic() < deadline:
            if reads(service, token) == 401:
                return time.monotonic() - revoked_at
            time.sleep(0.01)
        return float("inf")

    with ThreadPoolExecutor(2) as pool:
        delays = list(pool.map(until_refused, world.services[:2]))
    assert all(delay <= bound for delay in delays), f"refused after {delays} s, the bound is {bound} s"
    return delays


@pytest.fixture(scope="module", params=["embedded", "redis"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    backend: str = request.param
    redis_url = None
    if backend == "redis":
        if not redis_reachable():
            if IN_CI:
                pytest.fail(f"Redis is not running at {REDIS_URL}; CI runs the Redis revocation tests")
            pytest.skip(f"Redis is not running at {REDIS_URL} (start redis-server to run these tests)")
        redis_url = REDIS_URL
    root = tmp_path_factory.mktemp(f"revocation-{backend}")
    chit = ChitServer(root / "data", free_port())
    chit.start(*(["--redis-url", redis_url] if redis_url else []))
    found: World | None = None
    try:
        secrets = {}
        for name, text in (
            ("svc-a", guarded("svc-a")),
            ("svc-b", guarded("svc-b")),
            ("caller", CALLER),
            ("jobs", JOBS),
        ):
            secrets[name] = register_service(chit, root, name, text).secret or ""
        webapp_secret = chit.add_client("webapp", "--grant", "password", "--grant", TOKEN_EXCHANGE)["client_secret"]
        gateway_secret = chit.add_client("gateway", "--grant", TOKEN_EXCHANGE)["client_secret"]
        chit.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
        chit.cli_ok("grant", "client:gateway", "edge")
        found = World(
            backend,
            chit,
            root,
            secrets,
            ServiceClient(chit, "webapp", webapp_secret),
            ServiceClient(chit, "gateway", gateway_secret),
            ServiceClient(chit, "jobs", secrets["jobs"]),
            redis_url,
        )
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(found.start_service, ["svc-a", "svc-b"]))
        yield found
    finally:
        for service in found.services if found is not None else []:
            service.stop()
        chit.stop()


# --- every kind of revocation ---------------------------------------------------------------------------


def test_a_revoked_access_token_is_refused_by_both(world: World) -> None:
    token = world.token(world.new_user())
    accepted_by_both(world, token)
    response = httpx.post(world.chit.url + "/oauth2/revoke", data={"token": token, "client_id": "chit-cli"})
    revoked_at = time.monotonic()
    assert response.status_code == 200
    refused_by_both_within(world, token, revoked_at)


def test_a_revoked_refresh_family_ends_its_access_tokens_at_both(world: World) -> None:
    username = world.new_user()
    answer = login(world.chit, username, PASSWORD).json()
    token = answer["access_token"]
    accepted_by_both(world, token)
    data = {"token": answer["refresh_token"], "client_id": "chit-cli"}
    assert httpx.post(world.chit.url + "/oauth2/revoke", data=data).status_code == 200
    refused_by_both_within(world, token, time.monotonic())


def test_a_session_revoked_by_an_operator_is_refused_by_both(world: World) -> None:
    username = world.new_user()
    token = world.token(username)
    accepted_by_both(world, token)
    world.chit.cli_ok("session", "revoke", claims_of(token)["sid"])
    refused_by_both_within(world, token, time.monotonic())


def test_the_chits_minted_from_a_revoked_login_are_refused_by_both(world: World) -> None:
    """A chit carries its login's session (``session("rtf_…")``): revoking the refresh token ends the chits
    a service minted acting for that login, as it ends the login's JWTs."""
    username = world.new_user()
    answer = login(world.chit, username, PASSWORD).json()
    sid = claims_of(answer["access_token"])["sid"]
    chit = access_token(world.jobs.exchange(answer["access_token"], requested_token_type=BISCUIT_TYPE))
    assert world.jobs.introspect(chit)["active"] is True
    accepted_by_both(world, chit)
    data = {"token": answer["refresh_token"], "client_id": "chit-cli"}
    assert httpx.post(world.chit.url + "/oauth2/revoke", data=data).status_code == 200
    refused_by_both_within(world, chit, time.monotonic())
    assert world.jobs.introspect(chit) == {"active": False}
    assert sid.startswith("rtf_")


def test_a_disabled_users_tokens_and_chits_are_refused_by_both(world: World) -> None:
    username = world.new_user()
    token = world.token(username)
    chit = world.chit_of(username)
    accepted_by_both(world, token)
    accepted_by_both(world, chit)
    world.chit.cli_ok("user", "disable", username)
    revoked_at = time.monotonic()
    refused_by_both_within(world, token, revoked_at)
    refused_by_both_within(world, chit, revoked_at)


def test_logging_out_everywhere_is_refused_by_both_and_a_new_login_works(world: World) -> None:
    username = world.new_user()
    tokens = [world.token(username) for _ in range(2)]
    for token in tokens:
        accepted_by_both(world, token)
    time.sleep(1.05)  # a login in the next second, after the cut, must not be caught by it
    world.chit.cli_ok("user", "logout-everywhere", username)
    revoked_at = time.monotonic()
    for token in tokens:
        refused_by_both_within(world, token, revoked_at)
    time.sleep(1.05)
    accepted_by_both(world, world.token(username))


def test_a_removed_services_tokens_are_refused_by_both(world: World) -> None:
    caller = ServiceClient(world.chit, "caller", world.secrets["caller"])
    token = caller.own_token()
    accepted_by_both(world, token)
    world.chit.cli_ok("service", "remove", "caller")
    refused_by_both_within(world, token, time.monotonic())


def test_a_revoked_chit_and_its_attenuations_are_refused_by_both(world: World) -> None:
    import chit as sdk

    username = world.new_user()
    minted = world.chit_of(username)
    discovery = httpx.get(world.chit.url + "/.well-known/oauth-authorization-server").json()
    root_keys = {key["id"]: key["public_key"] for key in discovery["biscuit_root_keys"]}
    operations = ["svc-a:things:read", "svc-b:things:read"]
    narrowed = sdk.attenuate(minted, operations=operations, ttl=300, public_keys=root_keys)
    accepted_by_both(world, minted)
    accepted_by_both(world, narrowed)
    assert world.webapp.revoke(minted).status_code == 200
    revoked_at = time.monotonic()
    refused_by_both_within(world, minted, revoked_at)
    refused_by_both_within(world, narrowed, revoked_at)


def test_a_revoked_api_key_ends_the_tokens_exchanged_from_it_at_both(world: World) -> None:
    username = world.new_user()
    scopes = ["--scope", "svc-a:things:read", "--scope", "svc-b:things:read"]
    key = world.chit.cli_ok("api-key", "create", "--owner", f"user:{username}", *scopes, "--json").json()
    token = access_token(world.gateway.exchange(key["api_key"], subject_token_type=API_KEY_TYPE))
    assert claims_of(token)["sid"] == key["id"]
    chit = access_token(
        world.gateway.exchange(key["api_key"], subject_token_type=API_KEY_TYPE, requested_token_type=BISCUIT_TYPE)
    )
    accepted_by_both(world, token)
    accepted_by_both(world, chit)
    world.chit.cli_ok("api-key", "revoke", key["id"])
    revoked_at = time.monotonic()
    refused_by_both_within(world, token, revoked_at)
    refused_by_both_within(world, chit, revoked_at)
    assert world.gateway.introspect(chit) == {"active": False}


def test_a_revoked_deferred_delegation_ends_what_was_redeemed_from_it_at_both(world: World) -> None:
    username = world.new_user()
    handle = world.jobs.deferred_handle(world.token(username), job_id="nightly")
    token = world.jobs.redeemed_token(handle)
    chit = world.jobs.redeemed_token(handle, requested_token_type=BISCUIT_TYPE)
    assert claims_of(token)["sid"] == delegation_id(handle)
    accepted_by_both(world, token)
    accepted_by_both(world, chit)
    world.chit.cli_ok("delegation", "revoke", delegation_id(handle))
    revoked_at = time.monotonic()
    refused_by_both_within(world, token, revoked_at)
    refused_by_both_within(world, chit, revoked_at)
    assert world.jobs.introspect(chit) == {"active": False}


def test_a_revoked_signing_key_ends_every_token_it_signed_at_both(world: World) -> None:
    username = world.new_user()
    token = world.token(username)
    chit = world.chit_of(username)
    accepted_by_both(world, token)
    accepted_by_both(world, chit)
    old_kid = jwt.get_unverified_header(token)["kid"]
    # a service that fetched the key set seconds ago (its first request) must not wait out the fetch
    # cool-down before it knows the new key: the key event makes it fetch at once
    late = world.start_service("svc-b")
    assert reads(late, token) == 200
    world.chit.cli_ok("keys", "rotate", "--now", "--revoke-old")
    revoked_at = time.monotonic()
    refused_by_both_within(world, token, revoked_at)
    refused_by_both_within(world, chit, revoked_at)
    deadline = time.monotonic() + 5  # the server signs with the new key once it has re-read its key set
    fresh = world.token(username)
    while jwt.get_unverified_header(fresh)["kid"] == old_kid:
        assert time.monotonic() < deadline, "the server still signs with the revoked key"
        time.sleep(0.1)
        fresh = world.token(username)
    try:
        assert reads(late, token) == 401
        deadline = time.monotonic() + BOUND
        while reads(late, fresh) != 200:
            assert time.monotonic() < deadline, "a token of the new key was refused after the key event"
            time.sleep(0.02)
        accepted_by_both(world, fresh)
    finally:
        late.stop()
        world.services.remove(late)


def test_a_service_started_after_the_revocations_refuses_them_from_its_first_request(world: World) -> None:
    username = world.new_user()
    revoked = world.token(username)
    kept = world.token(username)
    assert httpx.post(world.chit.url + "/oauth2/revoke", data={"token": revoked, "client_id": "chit-cli"}).is_success
    late = world.start_service("svc-a")  # a restart: a new process with an empty list
    try:
        assert reads(late, revoked) == 401
        assert reads(late, kept) == 200
        assert httpx.get(late.url + "/revocations").json()["size"] >= 1
    finally:
        late.stop()
        world.services.remove(late)


def test_each_service_exposes_its_decisions_and_list_as_metrics(world: World) -> None:
    text = httpx.get(world.services[0].url + "/metrics/").text
    for name in ("chit_sdk_decisions_total", "chit_sdk_revocation_list_size", "chit_sdk_revocation_feed_staleness"):
        assert name in text, name
    server = httpx.get(world.chit.url + "/metrics").text
    assert 'chit_revocations_published_total{kind="token"}' in server


# --- a Redis outage, and a feed cut past max_staleness -----------------------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server of the test's own on a free port, so that stopping it disturbs nobody else."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        assert executable is not None
        command = [
            executable,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; CI runs the Redis outage test")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def small_world(
    tmp_path: Path, redis_url: str | None, server_env: dict[str, str] | None = None, **service_env: str
) -> World:
    chit = ChitServer(tmp_path / "data", free_port(), extra_env=server_env or {})
    chit.start(*(["--redis-url", redis_url] if redis_url else []))
    secrets = {name: register_service(chit, tmp_path, name, guarded(name)).secret or "" for name in ("svc-a", "svc-b")}
    unused = ServiceClient(chit, "none")
    found = World(
        "small", chit, tmp_path, secrets, unused, unused, unused, redis_url, roles=("svc-a:user", "svc-b:user")
    )
    for name in ("svc-a", "svc-b"):
        found.start_service(name, **service_env)
    return found


def stop_world(world: World) -> None:
    for service in world.services:
        service.stop()
    world.chit.stop()


def test_revocations_made_while_redis_was_down_are_enforced_once_it_returns(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    world = small_world(tmp_path, private_redis.url)
    try:
        username = world.new_user()
        before, during = world.token(username), world.token(username)
        accepted_by_both(world, before)
        accepted_by_both(world, during)
        revoked = httpx.post(world.chit.url + "/oauth2/revoke", data={"token": before, "client_id": "chit-cli"})
        assert revoked.is_success
        refused_by_both_within(world, before, time.monotonic())  # by Redis, while it runs
        private_redis.stop()
        revoked = httpx.post(world.chit.url + "/oauth2/revoke", data={"token": during, "client_id": "chit-cli"})
        assert revoked.is_success  # the database is the truth: a Redis outage delays no revocation
        assert reads(world.services[0], during) in (200, 401)
        private_redis.start()
        # back: each service catches up from the feed by cursor on reconnecting
        refused_by_both_within(world, during, time.monotonic(), bound=BOUND + 5)
    finally:
        stop_world(world)


def test_a_feed_cut_past_max_staleness_refuses_writes_serves_reads_and_recovers(tmp_path: Path) -> None:
    # a heartbeat every second keeps a connected follower fresh well inside 3 s, even on a loaded machine
    world = small_world(tmp_path, None, {"CHIT_FEED_HEARTBEAT": "1"}, MAX_STALENESS="3")
    try:
        username = world.new_user()
        token = world.token(username)
        service = world.services[0]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(service.url + "/things", headers=headers).status_code == 200
        world.chit.stop()  # the auth server, and with it the feed, is gone
        time.sleep(4)
        refused = httpx.post(service.url + "/things", headers=headers)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert httpx.get(service.url + "/things", headers=headers).status_code == 200  # reads go on
        assert httpx.get(service.url + "/revocations").json()["staleness"] > 3
        world.chit.start()  # same port, same data: the feed answers again
        # the follower reconnects with backoff (at most 15 s apart) while the server is away
        deadline = time.monotonic() + 25
        while httpx.post(service.url + "/things", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "writes were still refused 25 s after the feed returned"
            time.sleep(0.1)
    finally:
        stop_world(world)


def test_no_service_logged_a_traceback(world: World) -> None:
    for service in world.services:
        log = service.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
