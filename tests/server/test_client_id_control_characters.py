"""A client id holding a control character, sent in HTTP Basic credentials (RFC 6749 §2.3.1), on SQLite
and on PostgreSQL.

Basic credentials are form-decoded but are no form: the form parser's refusal of control characters does
not apply to them, and PostgreSQL cannot even compare a text holding NUL. No client id holds one, so
such an id is an unknown client: 401 ``invalid_client`` with the Basic challenge at the token,
introspection and revocation endpoints, the very answer an unknown client gets, and never a 5xx.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import httpx
import pytest
from helpers import IN_CI, POSTGRES_URL, ChitServer, free_port

TOKEN_PATH = "/oauth2/token"
INTROSPECT_PATH = "/oauth2/introspect"
REVOKE_PATH = "/oauth2/revoke"
ENDPOINTS = [TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH]
FORM_OF = {
    TOKEN_PATH: {"grant_type": "client_credentials"},
    INTROSPECT_PATH: {"token": "some-opaque-value"},
    REVOKE_PATH: {"token": "some-opaque-value"},
}
CLIENT_ID = "nul-svc"
ID = CLIENT_ID.encode()


class Installation:
    def __init__(self, chit: ChitServer) -> None:
        self.chit = chit
        self.secret: str = chit.add_client(CLIENT_ID)["client_secret"]

    def post(self, path: str, credentials: bytes) -> httpx.Response:
        """``credentials`` (``id:secret``, bytes as they are) base64-encoded into an Authorization header."""
        authorization = "Basic " + base64.b64encode(credentials).decode()
        headers = {"Authorization": authorization}
        return httpx.post(self.chit.url + path, data=FORM_OF[path], headers=headers, timeout=30)


PG_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=root"


@pytest.fixture(scope="module")
def private_schema() -> Iterator[str]:
    """A PostgreSQL URL on a fresh, private schema for the module's server (``postgres_url``, module-wide)."""
    import psycopg

    try:
        with psycopg.connect(PG_CONNINFO, connect_timeout=3):
            pass
    except psycopg.Error:
        message = "PostgreSQL is not reachable on 127.0.0.1:5432 (start it: pg_ctlcluster 15 main start)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """A server on a fresh database of each backend, shared by the module's tests."""
    database_url = request.getfixturevalue("private_schema") if request.param == "postgresql" else None
    data_dir = tmp_path_factory.mktemp(f"client-id-{request.param}") / "data"
    with ChitServer(data_dir, free_port(), database_url=database_url).running() as chit:
        yield Installation(chit)


def comparable(response: httpx.Response) -> tuple[int, object, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("date", "content-length")}
    return response.status_code, response.json(), headers


def assert_unknown_client(answer: httpx.Response, unknown: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client", body
    assert answer.headers["www-authenticate"].split(" ", 1)[0].lower() == "basic", answer.headers
    assert answer.headers["cache-control"] == "no-store"
    assert comparable(answer) == comparable(unknown)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_percent_encoded_nul_in_the_client_id_is_an_unknown_client(installation: Installation, path: str) -> None:
    secret = installation.secret.encode()
    unknown = installation.post(path, b"no-such-client:" + secret)
    assert_unknown_client(unknown, unknown)
    for client_id in (b"nul%00svc", ID + b"%00", b"%00" + ID, b"%00"):
        # the real client's secret too: a NUL must not let the id pass for the client's
        assert_unknown_client(installation.post(path, client_id + b":" + secret), unknown)
        assert_unknown_client(installation.post(path, client_id + b":"), unknown)
    assert "Traceback" not in installation.chit.log()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_raw_nul_in_the_base64_client_id_is_an_unknown_client(installation: Installation, path: str) -> None:
    secret = installation.secret.encode()
    unknown = installation.post(path, b"no-such-client:" + secret)
    for client_id in (b"nul\x00svc", ID + b"\x00", b"\x00"):
        assert_unknown_client(installation.post(path, client_id + b":" + secret), unknown)
    assert "Traceback" not in installation.chit.log()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_other_control_characters_in_the_client_id_are_an_unknown_client(installation: Installation, path: str) -> None:
    secret = installation.secret.encode()
    unknown = installation.post(path, b"no-such-client:" + secret)
    for client_id in (ID + b"%0A", ID + b"\r", b"nul\x1bsvc", ID + b"%7F"):
        assert_unknown_client(installation.post(path, client_id + b":" + secret), unknown)


def test_the_client_itself_still_authenticates(installation: Installation) -> None:
    credentials = f"{CLIENT_ID}:{installation.secret}".encode()
    for path in ENDPOINTS:
        answer = installation.post(path, credentials)
        assert answer.status_code == 200, answer.text
