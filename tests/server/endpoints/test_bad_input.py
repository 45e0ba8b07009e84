"""Hostile and malformed requests to the token, introspection and revocation endpoints.

Wrong content types, repeated parameters, broken percent-encoding, bytes that are not UTF-8,
control characters, empty and degenerate bodies, look-alike and SQL-looking names: each gets a
normal OAuth2 error answer (JSON with ``error``, ``Cache-Control: no-store``) that gives nothing of
the server's internals away, and never a 5xx. Bodies are sent as raw bytes (httpx does not touch
``content=``); requests that are not even valid HTTP go over a raw socket.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, ChitServer, ModuleServers, register_services
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FORM = "application/x-www-form-urlencoded"
LEAKS = ("traceback", 'file "', "sqlalchemy", "sqlite", "psycopg")
PASSWORD = "bad-input user password"
CLIENT_ID = "bad-svc"
TOKEN_PATH = "/oauth2/token"
INTROSPECT_PATH = "/oauth2/introspect"
REVOKE_PATH = "/oauth2/revoke"
ENDPOINTS = [TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH]
# a request each endpoint answers 200 to, when nothing is wrong with it
VALID_BODY = {
    TOKEN_PATH: b"grant_type=client_credentials",
    INTROSPECT_PATH: b"token=some-opaque-value",
    REVOKE_PATH: b"token=some-opaque-value",
}


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    # the failed logins below all come from 127.0.0.1: keep the per-source limit out of the way
    return module_server("bad-input", env={"CHIT_SOURCE_MAX_FAILURES": "100000"})


@pytest.fixture(scope="module")
def secret(chit: ChitServer) -> str:
    chit.add_user("bad-user", PASSWORD)
    register_services(chit, chit.data_dir.parent, {"svc": ["things:read"]})
    value: str = chit.add_client(CLIENT_ID, "--scope", "svc:things:read")["client_secret"]
    return value


@pytest.fixture(scope="module")
def http(chit: ChitServer, secret: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chit.url, timeout=30) as client:
        yield client


def send(
    http: httpx.Client,
    path: str,
    body: bytes,
    *,
    content_type: str | None = FORM,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return http.post(path, content=body, headers=headers, auth=auth)


def assert_clean(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    text = response.text.lower()
    for leak in LEAKS:
        assert leak not in text, response.text


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert_clean(response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert response.headers.get("cache-control") == "no-store", response.headers
    return body


# --- content type --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content_type", [FORM, FORM + "; charset=UTF-8", "Application/X-WWW-Form-URLEncoded"])
def test_form_content_type_is_accepted(http: httpx.Client, secret: str, path: str, content_type: str) -> None:
    response = send(http, path, VALID_BODY[path], content_type=content_type, auth=(CLIENT_ID, secret))
    assert response.status_code == 200, response.text


def wrong_bodies(path: str) -> list[tuple[str | None, bytes]]:
    form = VALID_BODY[path]
    name, _, value = form.decode().partition("=")
    multipart = f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n--xyz--\r\n'.encode()
    return [
        ("application/json", json.dumps({name: value}).encode()),
        ("application/json", form),
        ("multipart/form-data; boundary=xyz", multipart),
        ("text/plain", form),
        ("application/x-www-form-urlencoded-but-not", form),
        (None, form),
    ]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", range(6))
def test_wrong_content_type_is_invalid_request(http: httpx.Client, secret: str, path: str, case: int) -> None:
    content_type, body = wrong_bodies(path)[case]
    response = send(http, path, body, content_type=content_type, auth=(CLIENT_ID, secret))
    assert_error(response, 400, "invalid_request")


def test_request_without_content_type_really_has_none(http: httpx.Client) -> None:
    request = http.build_request("POST", TOKEN_PATH, content=b"grant_type=client_credentials")
    assert "content-type" not in request.headers


# --- repeated parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=client_credentials&grant_type=client_credentials",
        b"grant_type=client_credentials&grant_type=password",
        b"grant_type=client_credentials&scope=svc%3Athings%3Aread&scope=svc%3Athings%3Aread",
        b"grant_type=client_credentials&client_id=bad-svc&client_id=bad-svc",
    ],
)
def test_repeated_parameter_at_token_endpoint_is_invalid_request(http: httpx.Client, secret: str, body: bytes) -> None:
    assert_error(send(http, TOKEN_PATH, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


def test_repeated_client_id_with_client_secret_post_is_invalid_request(http: httpx.Client, secret: str) -> None:
    body = f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={secret}&client_id={CLIENT_ID}"
    assert_error(send(http, TOKEN_PATH, body.encode()), 400, "invalid_request")


@pytest.mark.parametrize("path", [INTROSPECT_PATH, REVOKE_PATH])
@pytest.mark.parametrize(
    "body", [b"token=a&token=a", b"token=a&token=b", b"token=a&token_type_hint=x&token_type_hint=y"]
)
def test_repeated_parameter_at_introspection_and_revocation_is_invalid_request(
    http: httpx.Client, secret: str, path: str, body: bytes
) -> None:
    assert_error(send(http, path, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


# --- encoding ------------------------------------------------------------------------------------

BAD_FRAGMENTS = [
    pytest.param(b"%zz", id="percent-zz"),
    pytest.param(b"%", id="trailing-percent"),
    pytest.param(b"%4", id="one-hex-digit"),
    pytest.param(b"%g0", id="percent-g0"),
    pytest.param(b"%ff", id="percent-ff-not-utf8"),
    pytest.param(b"%c3%28", id="bad-utf8-continuation"),
    pytest.param(b"%ed%a0%80", id="utf8-surrogate"),
    pytest.param(b"%c0%af", id="overlong-utf8"),
    pytest.param(b"%00", id="percent-nul"),
    pytest.param(b"%01", id="percent-soh"),
    pytest.param(b"%0a", id="percent-newline"),
    pytest.param(b"%0d", id="percent-cr"),
    pytest.param(b"%1b", id="percent-escape"),
    pytest.param(b"%7f", id="percent-del"),
    pytest.param(b"\x00", id="raw-nul"),
    pytest.param(b"\x1b", id="raw-escape"),
    pytest.param(b"\n", id="raw-newline"),
    pytest.param(b"\xff", id="raw-ff"),
    pytest.param(b"\xc3\x28", id="raw-bad-utf8"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_clean_extra_parameter_is_ignored(http: httpx.Client, secret: str, path: str) -> None:
    # the control for the tests below: the same request with a well-formed extra parameter succeeds
    response = send(http, path, VALID_BODY[path] + b"&extra=a%41b", auth=(CLIENT_ID, secret))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("fragment", BAD_FRAGMENTS)
def test_malformed_value_is_invalid_request(http: httpx.Client, secret: str, path: str, fragment: bytes) -> None:
    body = VALID_BODY[path] + b"&extra=a" + fragment + b"x"
    assert_error(send(http, path, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("ending", [b"%", b"%4", b"%00", b"%ff"])
def test_malformed_end_of_body_is_invalid_request(http: httpx.Client, secret: str, path: str, ending: bytes) -> None:
    body = VALID_BODY[path] + b"&extra=a" + ending
    assert_error(send(http, path, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("fragment", BAD_FRAGMENTS)
def test_malformed_parameter_name_is_invalid_request(
    http: httpx.Client, secret: str, path: str, fragment: bytes
) -> None:
    body = VALID_BODY[path] + b"&ex" + fragment + b"tra=1"
    assert_error(send(http, path, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


@pytest.mark.parametrize("fragment", BAD_FRAGMENTS)
def test_malformed_username_is_invalid_request_not_a_login_attempt(http: httpx.Client, fragment: bytes) -> None:
    body = b"grant_type=password&client_id=chit-cli&username=bad" + fragment + b"-user&password=" + PASSWORD.encode()
    assert_error(send(http, TOKEN_PATH, body), 400, "invalid_request")


def test_malformed_client_secret_is_invalid_request(http: httpx.Client) -> None:
    body = f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=%zz".encode()
    assert_error(send(http, TOKEN_PATH, body), 400, "invalid_request")


# --- method --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(http: httpx.Client, path: str, method: str) -> None:
    response = http.request(method, path, params={"grant_type": "client_credentials", "token": "x"})
    assert_clean(response)
    assert response.status_code == 405, response.text
    assert "POST" in response.headers["allow"]
    assert response.headers["content-type"].startswith("application/json")


# --- empty and degenerate bodies -----------------------------------------------------------------


def test_empty_body_at_token_endpoint_is_invalid_request(http: httpx.Client, secret: str) -> None:
    assert_error(send(http, TOKEN_PATH, b"", auth=(CLIENT_ID, secret)), 400, "invalid_request")
    assert_error(send(http, TOKEN_PATH, b""), 400, "invalid_request")


@pytest.mark.parametrize("path", [INTROSPECT_PATH, REVOKE_PATH])
def test_empty_body_at_introspection_and_revocation(http: httpx.Client, secret: str, path: str) -> None:
    assert_error(send(http, path, b"", auth=(CLIENT_ID, secret)), 400, "invalid_request")
    assert_error(send(http, path, b""), 401, "invalid_client")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_huge_number_of_ampersands_is_invalid_request(http: httpx.Client, secret: str, path: str) -> None:
    assert_error(send(http, path, b"&" * 60000, auth=(CLIENT_ID, secret)), 400, "invalid_request")
    assert_error(send(http, path, b"&" * 60000), 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_few_empty_fields_are_tolerated(http: httpx.Client, secret: str, path: str) -> None:
    response = send(http, path, b"&&&" + VALID_BODY[path] + b"&&&", auth=(CLIENT_ID, secret))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("body", [b"=", b"==", b"=&=", b"grant_type", b"grant_type=", b"&=&", b"+", b"%20=%20"])
def test_degenerate_forms_are_invalid_request(http: httpx.Client, secret: str, body: bytes) -> None:
    assert_error(send(http, TOKEN_PATH, body, auth=(CLIENT_ID, secret)), 400, "invalid_request")


# --- look-alike and injection-looking names ------------------------------------------------------


def password_login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    data = {"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password}
    return http.post(TOKEN_PATH, data=data)


@pytest.fixture(scope="module")
def unknown_user_answer(http: httpx.Client) -> dict[str, Any]:
    return assert_error(password_login(http, "nobody-at-all", "whatever-password"), 400, "invalid_grant")


UNICODE_NAMES = [
    "ünïcødé",
    "用户",
    "𝔞𝔡𝔪𝔦𝔫",
    "ａｄｍｉｎ",  # noqa: RUF001 (fullwidth look-alike of "admin", on purpose)
    "admin\u200b",
    "\u202eadmin",
    "ADMİN",
    "adm\u0131n",
    "e\u0301" * 40,
    "🔑" * 100,
]


@pytest.mark.parametrize("username", UNICODE_NAMES)
def test_unicode_username_gets_the_unknown_user_answer(
    http: httpx.Client, unknown_user_answer: dict[str, Any], username: str
) -> None:
    # even with the admin's password, a look-alike of "admin" is nobody
    response = password_login(http, username, ADMIN_PASSWORD)
    assert assert_error(response, 400, "invalid_grant") == unknown_user_answer


SQL_LIKE = [
    "' OR 1=1 --",
    "admin'--",
    "admin' OR '1'='1",
    "admin'/*",
    '" OR ""="',
    "'; DROP TABLE users; --",
    "%' OR username LIKE '%",
    "admin\\' OR 1=1 #",
]


@pytest.mark.parametrize("username", SQL_LIKE)
def test_sql_looking_username_gets_the_unknown_user_answer(
    http: httpx.Client, unknown_user_answer: dict[str, Any], username: str
) -> None:
    response = password_login(http, username, ADMIN_PASSWORD)
    assert assert_error(response, 400, "invalid_grant") == unknown_user_answer


@pytest.mark.parametrize("client_id", SQL_LIKE)
def test_sql_looking_client_id_gets_the_unknown_client_answer(http: httpx.Client, secret: str, client_id: str) -> None:
    reference = send(http, TOKEN_PATH, b"grant_type=client_credentials", auth=("no-such-client", secret))
    reference_body = assert_error(reference, 401, "invalid_client")
    basic = send(http, TOKEN_PATH, b"grant_type=client_credentials", auth=(client_id, secret))
    assert assert_error(basic, 401, "invalid_client") == reference_body
    post = http.post(
        TOKEN_PATH, data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert assert_error(post, 401, "invalid_client") == reference_body
    public = http.post(TOKEN_PATH, data={"grant_type": "password", "client_id": client_id, "username": "x"})
    assert assert_error(public, 401, "invalid_client") == reference_body


@pytest.mark.parametrize("token", SQL_LIKE)
def test_sql_looking_tokens_get_the_normal_answers(http: httpx.Client, secret: str, token: str) -> None:
    introspected = http.post(INTROSPECT_PATH, data={"token": token}, auth=(CLIENT_ID, secret))
    assert introspected.status_code == 200, introspected.text
    assert introspected.json() == {"active": False}
    revoked = http.post(REVOKE_PATH, data={"token": token}, auth=(CLIENT_ID, secret))
    assert revoked.status_code == 200, revoked.text
    refreshed = http.post(
        TOKEN_PATH, data={"grant_type": "refresh_token", "client_id": "chit-cli", "refresh_token": token}
    )
    assert_error(refreshed, 400, "invalid_grant")


def test_sql_looking_scope_is_invalid_scope(http: httpx.Client, secret: str) -> None:
    response = http.post(
        TOKEN_PATH, data={"grant_type": "client_credentials", "scope": "' OR 1=1 --"}, auth=(CLIENT_ID, secret)
    )
    assert_error(response, 400, "invalid_scope")


def test_accounts_and_clients_still_work_after_the_hostile_names(http: httpx.Client, secret: str) -> None:
    for username in ("'; DROP TABLE users; --", "' OR 1=1 --"):
        assert password_login(http, username, ADMIN_PASSWORD).status_code == 400
    assert password_login(http, "bad-user", PASSWORD).status_code == 200
    assert password_login(http, "admin", ADMIN_PASSWORD).status_code == 200
    response = send(http, TOKEN_PATH, b"grant_type=client_credentials", auth=(CLIENT_ID, secret))
    assert response.status_code == 200, response.text


# --- requests that are not valid HTTP ------------------------------------------------------------


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"BREW /oauth2/token HTTP/1.1\r\nHost: x\r\n\r\n", id="unknown-method"),
        pytest.param(b"POST /oauth2/\x00token HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-target"),
        pytest.param(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", id="bad-length"),
        pytest.param(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(
            b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="two-lengths",
        ),
        pytest.param(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", id="header-without-colon"),
        pytest.param(b"POST /oauth2/token HTTP/1.1\r\nHo\x00st: x\r\n\r\n", id="nul-in-header-name"),
        pytest.param(
            b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32, id="tls-hello"),
    ],
)
def test_malformed_http_gets_a_json_400(chit: ChitServer, request_bytes: bytes) -> None:
    status, headers, body = raw_exchange(chit.port, request_bytes)
    assert status == 400, body
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body)["error"] == "invalid_request"


# --- random input --------------------------------------------------------------------------------

FORM_PIECES = [
    "grant_type",
    "=",
    "&",
    "client_credentials",
    "password",
    "refresh_token",
    "client_id",
    "chit-cli",
    CLIENT_ID,
    "client_secret",
    "username",
    "password",
    "someone",  # not bad-user: random failed logins must not lock an account other tests use
    "scope",
    "svc:things:read",
    "+",
    "%",
    "%zz",
    "%ff",
    "%00",
    "%41",
    "%3D",
    "%26",
    "' OR 1=1 --",
    "ü",
    "\x00",
]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2048))
def test_random_bytes_never_break_the_token_endpoint(http: httpx.Client, body: bytes) -> None:
    response = send(http, TOKEN_PATH, body)
    assert_clean(response)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "error" in response.json()
    assert response.headers.get("cache-control") == "no-store"


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(FORM_PIECES), max_size=40),
    authenticate=st.booleans(),
    path=st.sampled_from(ENDPOINTS),
)
def test_random_forms_never_break_the_endpoints(
    http: httpx.Client, secret: str, pieces: list[str], authenticate: bool, path: str
) -> None:
    response = send(http, path, "".join(pieces).encode(), auth=(CLIENT_ID, secret) if authenticate else None)
    assert_clean(response)
    assert response.headers.get("cache-control") == "no-store"
    if response.status_code == 200 and path == REVOKE_PATH:
        return
    body = response.json()
    if response.status_code == 200:
        assert "access_token" in body or "active" in body, body
    else:
        assert "error" in body, body


def test_no_unhandled_error_was_logged(chit: ChitServer, http: httpx.Client) -> None:
    send(http, TOKEN_PATH, b"%zz")  # at least one hostile request, whatever ran before
    log = chit.log()
    assert "Traceback" not in log, log
    assert "unhandled error" not in log, log
