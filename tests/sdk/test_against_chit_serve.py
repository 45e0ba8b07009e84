"""The SDK against the real thing: ``chit serve`` processes and a service on uvicorn over loopback.

The DESIGN's FastAPI example runs exactly as written (only the issuer's port differs); the verifier
keeps serving while the auth server is stopped and picks up rotated keys without a restart.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from helpers import ChitServer, free_port

from chit import InvalidTokenError, ServiceIdentity, Verifier
from chit.sdk import RevokedTokens

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
READ_ANY = "image-store:images:read-any"
MANIFEST = """
id = "image-store"
description = "Users' images"

[permissions]
"images:read" = "Read an image"
"images:read-any" = "Read any user's image"
"images:delete" = "Delete an image"

[roles]
viewer = ["images:read"]
"""

DESIGN_EXAMPLE = """
from fastapi import FastAPI, Security
from chit import Principal, Verifier

verifier = Verifier(issuer="http://127.0.0.1:8700", audience="image-store")
app = FastAPI()

@app.get("/images/{image_id}")
async def read_image(image_id: str,
                     principal: Principal = Security(verifier, scopes=["image-store:images:read"])) -> dict:
    image = load(image_id)
    principal.require_owner(image.owner_id, unless="image-store:images:read-any")
    return image.as_dict()
"""


class UvicornThread:
    """A real uvicorn server for an app object, on a loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, loop="asyncio", lifespan="off", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "UvicornThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def photos(server: ChitServer, tmp_path: Path) -> dict[str, str]:
    """image-store registered; alice a viewer; the tagging service may read any image."""
    manifest = tmp_path / "image-store.toml"
    manifest.write_text(MANIFEST)
    server.cli_ok("service", "register", str(manifest))
    server.add_user("alice", "alice-password-long")
    server.add_user("bob", "bob-password-long")
    server.cli_ok("grant", "user:alice", "image-store:viewer")
    tagging = server.add_client("tagging", "--scope", READ, "--scope", READ_ANY)
    return {"tagging_secret": tagging["client_secret"], "alice": user_id(server, "alice")}


def user_id(server: ChitServer, username: str) -> str:
    token = password_token(server, username, f"{username}-password-long")["access_token"]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def password_token(server: ChitServer, username: str, password: str) -> dict[str, Any]:
    response = httpx.post(
        server.token_url,
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def client_token(server: ChitServer, client_id: str, secret: str) -> str:
    response = httpx.post(server.token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@pytest.fixture
def chit_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ChitServer]:
    env = getattr(request, "param", {})
    server = ChitServer(tmp_path / "data", free_port(), extra_env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_design_example_runs_as_written_on_uvicorn(chit_server: ChitServer, tmp_path: Path) -> None:
    ids = photos(chit_server, tmp_path)
    bob = user_id(chit_server, "bob")

    class Image:
        def __init__(self, image_id: str, owner_id: str) -> None:
            self.id, self.owner_id = image_id, owner_id

        def as_dict(self) -> dict[str, str]:
            return {"id": self.id, "owner_id": self.owner_id}

    images = {"a1": Image("a1", ids["alice"]), "b1": Image("b1", bob)}
    namespace: dict[str, Any] = {"load": images.__getitem__}
    exec(DESIGN_EXAMPLE.replace("http://127.0.0.1:8700", chit_server.url), namespace)  # noqa: S102 - the documented code itself

    alice = password_token(chit_server, "alice", "alice-password-long")["access_token"]
    tagging = client_token(chit_server, "tagging", ids["tagging_secret"])
    nobody = password_token(chit_server, "bob", "bob-password-long")["access_token"]  # no image-store grant
    with UvicornThread(namespace["app"]) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            own = await http.get("/images/a1", headers={"Authorization": f"Bearer {alice}"})
            assert own.status_code == 200, own.text
            assert own.json() == {"id": "a1", "owner_id": ids["alice"]}

            other = await http.get("/images/b1", headers={"Authorization": f"Bearer {alice}"})
            assert other.status_code == 403
            assert other.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')

            any_image = await http.get("/images/b1", headers={"Authorization": f"Bearer {tagging}"})
            assert any_image.status_code == 200

            wrong_audience = await http.get("/images/b1", headers={"Authorization": f"Bearer {nobody}"})
            assert wrong_audience.status_code == 401
            assert 'error="invalid_token"' in wrong_audience.headers["www-authenticate"]
            assert "audience" in wrong_audience.json()["detail"]

            anonymous = await http.get("/images/a1")
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == "Bearer"

            forged = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
            tampered = await http.get("/images/a1", headers={"Authorization": f"Bearer {forged}"})
            assert tampered.status_code == 401

            schema = (await http.get("/openapi.json")).json()
    flows = schema["components"]["securitySchemes"]["chit"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == chit_server.token_url
    assert flows["password"]["tokenUrl"] == chit_server.token_url
    assert schema["paths"]["/images/{image_id}"]["get"]["security"] == [{"chit": [READ]}]


@pytest.mark.parametrize("chit_server", [{"CHIT_JWKS_MAX_AGE": "1"}], indirect=True)
async def test_keeps_serving_valid_tokens_while_the_auth_server_is_stopped(
    chit_server: ChitServer, tmp_path: Path
) -> None:
    ids = photos(chit_server, tmp_path)
    tokens = [client_token(chit_server, "tagging", ids["tagging_secret"]) for _ in range(3)]
    verifier = Verifier(chit_server.url, "image-store", cache_size=0, refresh_cooldown=0.2)
    await verifier.verify(tokens[0])
    chit_server.stop()
    await asyncio.sleep(1.2)  # the JWKS max-age has passed: every refresh from now on fails
    for token in tokens:
        assert (await verifier.verify(token)).client_id == "tagging"
    assert not await verifier.jwks.refresh()
    assert verifier.jwks.last_error is not None
    assert "ConnectError" in verifier.jwks.last_error
    assert (await verifier.verify(tokens[1])).client_id == "tagging"
    chit_server.start()
    assert await verifier.jwks.refresh()
    assert (await verifier.verify(client_token(chit_server, "tagging", ids["tagging_secret"]))).client_id == "tagging"


async def test_picks_up_a_key_rotated_now_without_a_restart(chit_server: ChitServer, tmp_path: Path) -> None:
    ids = photos(chit_server, tmp_path)
    verifier = Verifier(chit_server.url, "image-store", refresh_cooldown=0.5)
    before = client_token(chit_server, "tagging", ids["tagging_secret"])
    await verifier.verify(before)
    fetches = verifier.jwks.fetches
    chit_server.cli_ok("keys", "rotate", "--now")
    deadline = time.monotonic() + 10
    after = before
    while kid(after) == kid(before):  # the server re-reads its key set within a second
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
        after = client_token(chit_server, "tagging", ids["tagging_secret"])
    await asyncio.sleep(0.5)  # the unknown-kid cool-down of this verifier
    assert (await verifier.verify(after)).client_id == "tagging"
    assert verifier.jwks.fetches == fetches + 1
    assert (await verifier.verify(before)).client_id == "tagging"  # the old key stays published


@pytest.mark.parametrize("chit_server", [{"CHIT_JWKS_MAX_AGE": "4"}], indirect=True)
async def test_a_scheduled_rotation_is_known_before_it_signs(
    chit_server: ChitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `keys rotate` publishes the key now and signs with it once this max-age has passed
    monkeypatch.setenv("CHIT_JWKS_MAX_AGE", "4")
    ids = photos(chit_server, tmp_path)
    verifier = Verifier(chit_server.url, "image-store", cache_size=0, refresh_cooldown=0.5)
    before = client_token(chit_server, "tagging", ids["tagging_secret"])
    await verifier.verify(before)
    rotated = chit_server.cli_ok("keys", "rotate", "--json").json()
    deadline = time.monotonic() + 15
    after = before
    while kid(after) != rotated["kid"]:
        assert time.monotonic() < deadline
        await verifier.verify(before)  # ordinary traffic: stale keys renew in the background
        await asyncio.sleep(0.2)
        after = client_token(chit_server, "tagging", ids["tagging_secret"])
    assert rotated["kid"] in verifier.jwks.keys  # fetched before its first token was presented
    fetches = verifier.jwks.fetches
    assert (await verifier.verify(after)).client_id == "tagging"
    assert verifier.jwks.fetches == fetches  # no unknown-kid refetch was needed


async def test_user_tokens_hand_jti_and_sid_to_the_revocation_check(chit_server: ChitServer, tmp_path: Path) -> None:
    photos(chit_server, tmp_path)
    seen: list[tuple[str, str | None]] = []

    class Recorder:
        def is_revoked(self, token_id: str, session_id: str | None) -> bool:
            seen.append((token_id, session_id))
            return session_id in revoked_sessions

    revoked_sessions: set[str | None] = set()
    verifier = Verifier(chit_server.url, "image-store", revocation=Recorder())
    token = password_token(chit_server, "alice", "alice-password-long")["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    principal = await verifier.verify(token)
    assert principal.session_id == claims["sid"]
    assert seen == [(claims["jti"], claims["sid"])]
    revoked_sessions.add(claims["sid"])
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)


async def test_a_revoked_api_key_ends_the_tokens_exchanged_from_it_in_the_sdk(
    chit_server: ChitServer, tmp_path: Path
) -> None:
    """An exchanged token's ``sid`` is its API key's id: a feed that revokes the key reaches it."""
    photos(chit_server, tmp_path)
    exchange = "urn:ietf:params:oauth:grant-type:token-exchange"
    chit_server.cli_ok("role", "create", "edge", "--permission", "chit:api-keys:exchange")
    edge_secret = chit_server.add_client("edge", "--grant", exchange)["client_secret"]
    chit_server.cli_ok("grant", "client:edge", "edge")
    key = chit_server.cli_ok("api-key", "create", "--owner", "alice", "--scope", READ, "--json").json()
    response = httpx.post(
        chit_server.token_url,
        data={
            "grant_type": exchange,
            "subject_token": key["api_key"],
            "subject_token_type": "urn:chit:token-type:api-key",
        },
        auth=("edge", edge_secret),
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    revoked = RevokedTokens()
    verifier = Verifier(chit_server.url, "image-store", revocation=revoked)
    assert (await verifier.verify(token)).session_id == key["id"]
    revoked.revoke_session(key["id"])
    with pytest.raises(InvalidTokenError, match="revoked"):
        await verifier.verify(token)


@pytest.mark.parametrize("chit_server", [{"CHIT_ACCESS_TOKEN_TTL": "4"}], indirect=True)
async def test_service_identity_with_the_real_server(chit_server: ChitServer, tmp_path: Path) -> None:
    ids = photos(chit_server, tmp_path)
    verifier = Verifier(chit_server.url, "image-store")
    from fastapi import FastAPI, Security

    from chit import Principal

    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read(image_id: str, principal: Principal = Security(verifier, scopes=[READ_ANY])) -> dict[str, str]:
        return {"id": image_id, "client": principal.client_id}

    identity = ServiceIdentity("tagging", ids["tagging_secret"], issuer=chit_server.url)
    tokens = await asyncio.gather(*(identity.token() for _ in range(20)))
    assert len(set(tokens)) == 1
    assert identity.requests == 1  # one request to the token endpoint for twenty callers
    with UvicornThread(app) as service:
        async with httpx.AsyncClient(base_url=service.url, auth=identity) as http:
            response = await http.get("/images/b1")
            assert response.json() == {"id": "b1", "client": "tagging"}
            await asyncio.sleep(2.1)  # half of the 4 s lifetime: renewed ahead of expiry
            assert (await http.get("/images/b1")).status_code == 200
    assert identity.requests == 2
    assert await identity.token() != tokens[0]
