"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3.1, DESIGN §4).

An unknown client and a wrong secret get the same answer (status, body, headers) with either
method; two methods at once, or a body ``client_id`` other than Basic's, is ``invalid_request``;
Basic credentials are form-decoded; every failed or missing authentication is 401
``invalid_client``, with ``WWW-Authenticate: Basic`` when Basic was tried.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers import ChitServer, ModuleServers, register_services

CONFIDENTIAL = "conf.svc-1"  # '.' and '-' in the id, on purpose
PUBLIC = "pub-app"
USER, PASSWORD = "client-auth-user", "client-auth password"
TOKEN_PATH = "/oauth2/token"
INTROSPECT_PATH = "/oauth2/introspect"
REVOKE_PATH = "/oauth2/revoke"
ENDPOINTS = [TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH]
FORM_OF = {
    TOKEN_PATH: {"grant_type": "client_credentials"},
    INTROSPECT_PATH: {"token": "some-opaque-value"},
    REVOKE_PATH: {"token": "some-opaque-value"},
}


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("client-auth")


@pytest.fixture(scope="module")
def secret(chit: ChitServer) -> str:
    chit.add_client(PUBLIC, "--public", "--grant", "password", "--grant", "refresh_token")
    chit.add_user(USER, PASSWORD)
    register_services(chit, chit.data_dir.parent, {"svc": ["things:read"]})
    value: str = chit.add_client(CONFIDENTIAL, "--scope", "svc:things:read")["client_secret"]
    return value


@pytest.fixture(scope="module")
def http(chit: ChitServer, secret: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chit.url, timeout=30) as client:
        yield client


def basic(user: str, password: str) -> str:
    """An Authorization header exactly as given: no encoding other than base64."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(http: httpx.Client, path: str, data: dict[str, str], authorization: str | None = None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return http.post(path, data=data, headers=headers)


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("cache-control") == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    return body


def comparable_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() != "date"}


def assert_basic_challenge(response: httpx.Response) -> None:
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0].lower() == "basic", response.headers


# --- the control: what succeeds ------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_confidential_client_authenticates_with_basic_and_with_post(http: httpx.Client, secret: str, path: str) -> None:
    assert post(http, path, FORM_OF[path], basic(CONFIDENTIAL, secret)).status_code == 200
    with_post = post(http, path, {**FORM_OF[path], "client_id": CONFIDENTIAL, "client_secret": secret})
    assert with_post.status_code == 200, with_post.text


def test_public_client_authenticates_with_its_id_alone(http: httpx.Client) -> None:
    data = {"grant_type": "password", "client_id": PUBLIC, "username": USER, "password": PASSWORD}
    response = post(http, TOKEN_PATH, data)
    assert response.status_code == 200, response.text


# --- unknown client and wrong secret: one answer -------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unknown_client_and_wrong_secret_get_the_same_basic_answer(http: httpx.Client, secret: str, path: str) -> None:
    unknown = post(http, path, FORM_OF[path], basic("no-such-client", secret))
    wrong = post(http, path, FORM_OF[path], basic(CONFIDENTIAL, secret[:-1] + ("A" if secret[-1] != "A" else "B")))
    assert_error(unknown, 401, "invalid_client")
    assert_basic_challenge(unknown)
    assert (wrong.status_code, wrong.json(), comparable_headers(wrong)) == (
        unknown.status_code,
        unknown.json(),
        comparable_headers(unknown),
    )


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unknown_client_and_wrong_secret_get_the_same_post_answer(http: httpx.Client, secret: str, path: str) -> None:
    unknown = post(http, path, {**FORM_OF[path], "client_id": "no-such-client", "client_secret": secret})
    wrong = post(http, path, {**FORM_OF[path], "client_id": CONFIDENTIAL, "client_secret": "wrong-" + secret})
    assert_error(unknown, 401, "invalid_client")
    assert (wrong.status_code, wrong.json(), comparable_headers(wrong)) == (
        unknown.status_code,
        unknown.json(),
        comparable_headers(unknown),
    )


def test_unknown_public_client_id_gets_the_same_answer_as_a_wrong_secret(http: httpx.Client) -> None:
    data = {"grant_type": "password", "username": USER, "password": PASSWORD}
    unknown = post(http, TOKEN_PATH, {**data, "client_id": "no-such-app"})
    wrong = post(http, TOKEN_PATH, {**data, "client_id": CONFIDENTIAL, "client_secret": "wrong"})
    assert_error(unknown, 401, "invalid_client")
    assert (wrong.status_code, wrong.json(), comparable_headers(wrong)) == (
        unknown.status_code,
        unknown.json(),
        comparable_headers(unknown),
    )


# --- two methods, or two client ids --------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("body_secret", ["same", "other"])
def test_basic_and_client_secret_in_body_together_is_invalid_request(
    http: httpx.Client, secret: str, path: str, body_secret: str
) -> None:
    data = {**FORM_OF[path], "client_secret": secret if body_secret == "same" else "something-else"}
    assert_error(post(http, path, data, basic(CONFIDENTIAL, secret)), 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_client_id_other_than_basic_is_invalid_request(http: httpx.Client, secret: str, path: str) -> None:
    for other in (PUBLIC, "no-such-client", CONFIDENTIAL.upper()):
        data = {**FORM_OF[path], "client_id": other}
        assert_error(post(http, path, data, basic(CONFIDENTIAL, secret)), 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_client_id_equal_to_basic_is_accepted(http: httpx.Client, secret: str, path: str) -> None:
    response = post(http, path, {**FORM_OF[path], "client_id": CONFIDENTIAL}, basic(CONFIDENTIAL, secret))
    assert response.status_code == 200, response.text


# --- Basic credentials are form-decoded ----------------------------------------------------------


def percent_encode_all(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


@pytest.mark.parametrize("path", ENDPOINTS)
def test_basic_credentials_are_form_decoded(http: httpx.Client, secret: str, path: str) -> None:
    encoded_id, encoded_secret = percent_encode_all(CONFIDENTIAL), percent_encode_all(secret)
    assert "." not in encoded_id
    assert "-" not in encoded_id
    response = post(http, path, FORM_OF[path], basic(encoded_id, encoded_secret))
    assert response.status_code == 200, response.text


def test_basic_credentials_as_a_standard_client_encodes_them_authenticate(http: httpx.Client, secret: str) -> None:
    # what RFC 6749 §2.3.1 clients send: application/x-www-form-urlencoded id and secret
    header = basic(quote(CONFIDENTIAL, safe=""), quote(secret, safe=""))
    assert post(http, TOKEN_PATH, FORM_OF[TOKEN_PATH], header).status_code == 200


def test_basic_credentials_are_decoded_exactly_once(http: httpx.Client, secret: str) -> None:
    double = percent_encode_all(percent_encode_all(secret))
    response = post(http, TOKEN_PATH, FORM_OF[TOKEN_PATH], basic(CONFIDENTIAL, double))
    assert_error(response, 401, "invalid_client")
    assert_basic_challenge(response)


def test_basic_scheme_name_is_case_insensitive(http: httpx.Client, secret: str) -> None:
    header = "bAsIc " + basic(CONFIDENTIAL, secret).split(" ", 1)[1]
    assert post(http, TOKEN_PATH, FORM_OF[TOKEN_PATH], header).status_code == 200


# --- malformed and missing authentication --------------------------------------------------------


MALFORMED_AUTHORIZATION = [
    pytest.param("Basic !!!not-base64!!!", id="not-base64"),
    pytest.param("Basic " + base64.b64encode(b"no-colon-here").decode(), id="no-colon"),
    pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(), id="not-utf8"),
    pytest.param("Basic " + base64.b64encode(b"conf.svc-1:x").decode()[:-2], id="truncated"),
    pytest.param("Basic", id="scheme-only"),
    pytest.param("Basic ====", id="padding-only"),
    pytest.param("Basic " + base64.b64encode(b":").decode(), id="empty-id-and-secret"),
    pytest.param("Bearer some-token", id="bearer"),
    pytest.param("Digest username=conf.svc-1", id="digest"),
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("authorization", MALFORMED_AUTHORIZATION)
def test_malformed_authorization_is_401_invalid_client(http: httpx.Client, path: str, authorization: str) -> None:
    response = post(http, path, FORM_OF[path], authorization)
    assert_error(response, 401, "invalid_client")
    assert_basic_challenge(response)


def test_public_client_sending_a_secret_is_401(http: httpx.Client) -> None:
    data = {"grant_type": "password", "username": USER, "password": PASSWORD}
    in_body = post(http, TOKEN_PATH, {**data, "client_id": PUBLIC, "client_secret": "made-up"})
    assert_error(in_body, 401, "invalid_client")
    with_basic = post(http, TOKEN_PATH, data, basic(PUBLIC, "made-up"))
    assert_error(with_basic, 401, "invalid_client")
    assert_basic_challenge(with_basic)


def test_public_client_cannot_introspect(http: httpx.Client) -> None:
    response = post(http, INTROSPECT_PATH, {"token": "some-opaque-value", "client_id": PUBLIC})
    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_confidential_client_without_a_secret_is_401(http: httpx.Client, path: str) -> None:
    assert_error(post(http, path, {**FORM_OF[path], "client_id": CONFIDENTIAL}), 401, "invalid_client")
    with_basic = post(http, path, FORM_OF[path], basic(CONFIDENTIAL, ""))
    assert_error(with_basic, 401, "invalid_client")
    assert_basic_challenge(with_basic)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_client_authentication_is_401_invalid_client(http: httpx.Client, path: str) -> None:
    assert_error(post(http, path, FORM_OF[path]), 401, "invalid_client")


def test_missing_client_authentication_for_a_password_grant_is_401(http: httpx.Client) -> None:
    data = {"grant_type": "password", "username": USER, "password": PASSWORD}
    assert_error(post(http, TOKEN_PATH, data), 401, "invalid_client")


def test_client_secret_without_client_id_is_401(http: httpx.Client, secret: str) -> None:
    response = post(http, TOKEN_PATH, {"grant_type": "client_credentials", "client_secret": secret})
    assert_error(response, 401, "invalid_client")
