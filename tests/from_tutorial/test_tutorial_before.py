"""The guide's starting point runs as written: the tutorial-shaped app (``examples/from-tutorial/before``),
served by uvicorn, logs users in with the password flow, signs HS256 tokens with its own secret and checks
scopes in process.

Its login form needs ``python-multipart``, which FastAPI asks for as soon as the app is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import jwt
import pytest
from helpers import IN_CI, ServiceProcess, free_port
from tutorial_apps import BEFORE, load_app


@pytest.fixture(scope="module")
def before() -> ModuleType:
    if importlib.util.find_spec("python_multipart") is None:
        message = "the tutorial's login form needs python-multipart (pip install python-multipart)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return load_app(BEFORE, "from_tutorial_before")


@pytest.fixture(scope="module")
def client(before: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The app served as its users run it; the tests share its in-memory items."""
    log = tmp_path_factory.mktemp("before") / "app.log"
    service = ServiceProcess("app", BEFORE.parent, free_port(), log, env={"PYTHONPATH": python_multipart_path()})
    service.start()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            yield client
    finally:
        service.stop()


def python_multipart_path() -> str:
    """Where this interpreter finds python-multipart, so that the served app finds it too."""
    spec = importlib.util.find_spec("python_multipart")
    assert spec is not None
    assert spec.origin is not None
    return str(Path(spec.origin).parent.parent)


def login(client: httpx.Client, username: str, password: str, scope: str = "") -> dict[str, str]:
    response = client.post("/token", data={"username": username, "password": password, "scope": scope})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_password_login_gives_an_hs256_token_with_the_users_scopes(client: httpx.Client, before: ModuleType) -> None:
    token = login(client, "alice", "alice-password")["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, before.SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["scope"] == "items:read items:write"
    narrowed = login(client, "alice", "alice-password", scope="items:read")["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(narrowed, before.SECRET_KEY, algorithms=["HS256"])["scope"] == "items:read"


def test_a_scope_the_user_does_not_hold_is_not_granted(client: httpx.Client) -> None:
    bob = login(client, "bob", "bob-password", scope="items:read items:write")
    assert client.get("/items/", headers=bob).status_code == 200
    assert client.post("/items/", json={"name": "saw"}, headers=bob).status_code == 403


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong-password"), ("nobody", "alice-password")])
def test_bad_credentials_get_401(client: httpx.Client, username: str, password: str) -> None:
    response = client.post("/token", data={"username": username, "password": password})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_scopes_allow_and_refuse_in_process(client: httpx.Client) -> None:
    alice, bob = login(client, "alice", "alice-password"), login(client, "bob", "bob-password")
    created = client.post("/items/", json={"name": "hammer"}, headers=alice)
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "hammer", "owner": "alice"}
    assert {"name": "hammer", "owner": "alice"} in client.get("/items/", headers=bob).json()
    refused = client.post("/items/", json={"name": "saw"}, headers=bob)
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="items:write"'
    assert client.get("/users/me", headers=bob).json() == {
        "username": "bob",
        "full_name": "Bob Builder",
        "scopes": ["items:read"],
    }


def test_a_request_without_a_valid_token_gets_401(client: httpx.Client) -> None:
    assert client.get("/items/").status_code == 401
    forged = jwt.encode({"sub": "alice", "scope": "items:write", "exp": 4102444800}, "another-secret-of-32-bytes-min!!")
    refused = client.post("/items/", json={"name": "forged"}, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer scope="items:write"'
    alice = login(client, "alice", "alice-password")
    assert "forged" not in [item["name"] for item in client.get("/items/", headers=alice).json()]
