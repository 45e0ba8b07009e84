"""DESIGN §4 size limits at their exact boundaries, over a raw socket to a real ``chit serve``.

Each limit is the largest size accepted: a request line of 8 KiB, all header lines together 16 KiB
(each header line counted as ``name: value`` plus CRLF, as ``chit.server.limits`` does), a body of
64 KiB (with Content-Length and chunked), a parameter of 4 KiB (a token parameter 16 KiB), 100 scope
values and 100 form fields. One byte (or value, or field) more is refused with a JSON ``error``,
chit's own answer rather than the HTTP server's, and never a 5xx.
"""

from __future__ import annotations

import base64
import json
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import ChitServer, ModuleServers, register_services

KIB = 1024
MAX_REQUEST_LINE = 8 * KIB
MAX_HEADERS = 16 * KIB
MAX_BODY = 64 * KIB
MAX_PARAMETER = 4 * KIB
MAX_TOKEN_PARAMETER = 16 * KIB
CLIENT_ID = "size-svc"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, *parts: bytes, timeout: float = 15) -> RawResponse:
    """Send ``parts`` over a fresh connection (in that order, unchanged) and read one response.

    The server may refuse and close before it has read everything we send: a reset after the
    response has arrived is expected then, a reset before it is not.
    """
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for part in parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while not _complete(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
    assert received, "the server closed the connection without answering"
    return _parse(received)


def _complete(data: bytes) -> bool:
    _, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = _parse(data).headers.get("content-length")
    return length is not None and len(body) >= int(length)


def _parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


def head_bytes(request_line: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [request_line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def header_lines_length(headers: list[tuple[str, str]]) -> int:
    """The headers' size as DESIGN §4 counts it: each ``name: value`` line with its CRLF."""
    return sum(len(name) + 2 + len(value) + 2 for name, value in headers)


def assert_refused(response: RawResponse, status: int) -> None:
    """chit's refusal: the status, JSON with ``error`` invalid_request, not cached."""
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    assert response.json()["error"] == "invalid_request", response.body
    assert response.headers.get("cache-control") == "no-store"


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("size-limits")


@pytest.fixture(scope="module")
def basic(chit: ChitServer) -> str:
    """The Authorization header of a confidential client holding ``svc:things:*``."""
    register_services(chit, chit.data_dir.parent, {"svc": ["things:read"]})
    client = chit.add_client(CLIENT_ID, "--scope", "svc:things:*")
    return "Basic " + base64.b64encode(f"{CLIENT_ID}:{client['client_secret']}".encode()).decode()


def post(
    chit: ChitServer,
    path: str,
    body: bytes,
    authorization: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> RawResponse:
    headers = [("Host", "127.0.0.1"), ("Connection", "close"), ("Content-Type", content_type)]
    if authorization:
        headers.append(("Authorization", authorization))
    headers.append(("Content-Length", str(len(body))))
    return exchange(chit.port, head_bytes(f"POST {path} HTTP/1.1", headers), body)


def padded_form(prefix: str, size: int) -> bytes:
    """``prefix`` followed by filler parameters (each within the 4 KiB limit) to exactly ``size`` bytes."""
    body = prefix.encode()
    index = 0
    while len(body) < size:
        name = f"&pad{index:03d}=".encode()
        room = size - len(body) - len(name)
        value_length = min(MAX_PARAMETER, room)
        if 0 < room - value_length <= len(name):  # leave room for one more whole field
            value_length -= len(name) + 1
        body += name + b"a" * value_length
        index += 1
    assert len(body) == size
    return body


# --- request line --------------------------------------------------------------------------------


def request_line(size: int, path: str) -> str:
    """``GET <path><padding> HTTP/1.1`` of exactly ``size`` bytes."""
    fixed = len(f"GET {path} HTTP/1.1")
    line = f"GET {path}{'a' * (size - fixed)} HTTP/1.1"
    assert len(line) == size
    return line


HOST_ONLY = [("Host", "127.0.0.1"), ("Connection", "close")]


def test_request_line_of_8_kib_is_accepted(chit: ChitServer) -> None:
    response = exchange(chit.port, head_bytes(request_line(MAX_REQUEST_LINE, "/healthz?pad="), HOST_ONLY))
    assert response.status == 200, response.body
    assert response.json() == {"status": "ok"}


def test_request_line_of_8_kib_to_an_unknown_path_is_404_not_414(chit: ChitServer) -> None:
    response = exchange(chit.port, head_bytes(request_line(MAX_REQUEST_LINE, "/unknown-"), HOST_ONLY))
    assert response.status == 404, response.body


@pytest.mark.parametrize("path", ["/healthz?pad=", "/unknown-"])
def test_request_line_of_8_kib_plus_one_is_414(chit: ChitServer, path: str) -> None:
    response = exchange(chit.port, head_bytes(request_line(MAX_REQUEST_LINE + 1, path), HOST_ONLY))
    assert_refused(response, 414)


def test_request_line_over_8_kib_with_http_1_0_is_414(chit: ChitServer) -> None:
    line = request_line(MAX_REQUEST_LINE + 1, "/healthz?pad=").replace("HTTP/1.1", "HTTP/1.0")
    assert len(line) == MAX_REQUEST_LINE + 1
    assert_refused(exchange(chit.port, head_bytes(line, [("Host", "127.0.0.1")])), 414)


@pytest.mark.parametrize("size", [64 * KIB, 64 * KIB + 100, 1024 * KIB])
def test_request_line_far_over_the_limit_is_chits_414(chit: ChitServer, size: int) -> None:
    # httptools cannot parse a target over 64 KiB; the answer must still be chit's JSON 414,
    # not the HTTP server's plain-text 400
    response = exchange(chit.port, head_bytes(request_line(size, "/oauth2/token?x="), HOST_ONLY))
    assert_refused(response, 414)


# --- headers -------------------------------------------------------------------------------------


def headers_of_size(total: int, *, pieces: int = 1) -> list[tuple[str, str]]:
    """Host, Connection and ``pieces`` padding headers whose lines add up to exactly ``total`` bytes."""
    headers = list(HOST_ONLY)
    remaining = total - header_lines_length(headers)
    for index in range(pieces):
        name = f"X-Pad-{index:04d}"
        share = remaining if index == pieces - 1 else remaining // (pieces - index)
        headers.append((name, "v" * (share - len(name) - 4)))
        remaining -= share
    assert header_lines_length(headers) == total
    return headers


@pytest.mark.parametrize("pieces", [1, 200])
def test_headers_of_16_kib_are_accepted(chit: ChitServer, pieces: int) -> None:
    headers = headers_of_size(MAX_HEADERS, pieces=pieces)
    response = exchange(chit.port, head_bytes("GET /healthz HTTP/1.1", headers))
    assert response.status == 200, response.body


@pytest.mark.parametrize("pieces", [1, 200])
def test_headers_of_16_kib_plus_one_are_431(chit: ChitServer, pieces: int) -> None:
    headers = headers_of_size(MAX_HEADERS + 1, pieces=pieces)
    response = exchange(chit.port, head_bytes("GET /healthz HTTP/1.1", headers))
    assert_refused(response, 431)


def test_headers_far_over_the_limit_are_431(chit: ChitServer) -> None:
    headers = [*HOST_ONLY, ("X-Big", "v" * (1024 * KIB))]
    assert_refused(exchange(chit.port, head_bytes("GET /healthz HTTP/1.1", headers)), 431)


def test_token_request_with_16_kib_of_headers_is_answered(chit: ChitServer, basic: str) -> None:
    body = b"grant_type=client_credentials"
    fixed = [
        ("Host", "127.0.0.1"),
        ("Connection", "close"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", basic),
        ("Content-Length", str(len(body))),
    ]
    pad = MAX_HEADERS - header_lines_length(fixed) - len("X-Pad: \r\n")
    headers = [*fixed, ("X-Pad", "v" * pad)]
    assert header_lines_length(headers) == MAX_HEADERS
    response = exchange(chit.port, head_bytes("POST /oauth2/token HTTP/1.1", headers), body)
    assert response.status == 200, response.body
    assert response.json()["token_type"] == "Bearer"


# --- body ----------------------------------------------------------------------------------------


def test_body_of_64_kib_is_accepted(chit: ChitServer, basic: str) -> None:
    body = padded_form("grant_type=client_credentials", MAX_BODY)
    response = post(chit, "/oauth2/token", body, basic)
    assert response.status == 200, response.body
    assert "access_token" in response.json()


def test_body_of_64_kib_plus_one_is_413(chit: ChitServer, basic: str) -> None:
    body = padded_form("grant_type=client_credentials", MAX_BODY + 1)
    assert_refused(post(chit, "/oauth2/token", body, basic), 413)


def test_declared_oversized_body_is_refused_before_it_is_sent(chit: ChitServer, basic: str) -> None:
    headers = [
        ("Host", "127.0.0.1"),
        ("Connection", "close"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", basic),
        ("Content-Length", str(10 * 1024 * KIB)),
    ]
    # nothing of the body is sent: the refusal must come from the declared length alone
    assert_refused(exchange(chit.port, head_bytes("POST /oauth2/token HTTP/1.1", headers), timeout=5), 413)


def test_content_length_beyond_any_integer_is_a_json_refusal(chit: ChitServer) -> None:
    headers = [*HOST_ONLY, ("Content-Type", "application/x-www-form-urlencoded")]
    headers.append(("Content-Length", "9" * 40))
    response = exchange(chit.port, head_bytes("POST /oauth2/token HTTP/1.1", headers), timeout=5)
    assert response.status in (400, 413), response.body
    assert_refused(response, response.status)


def chunked(body: bytes, chunk_size: int = 7000, *, terminate: bool = True) -> bytes:
    out = b""
    for start in range(0, len(body), chunk_size):
        chunk = body[start : start + chunk_size]
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    return out + (b"0\r\n\r\n" if terminate else b"")


def post_chunked(chit: ChitServer, body: bytes, authorization: str, *, terminate: bool = True) -> RawResponse:
    headers = [
        ("Host", "127.0.0.1"),
        ("Connection", "close"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", authorization),
        ("Transfer-Encoding", "chunked"),
    ]
    return exchange(chit.port, head_bytes("POST /oauth2/token HTTP/1.1", headers), chunked(body, terminate=terminate))


def test_chunked_body_of_64_kib_is_accepted(chit: ChitServer, basic: str) -> None:
    response = post_chunked(chit, padded_form("grant_type=client_credentials", MAX_BODY), basic)
    assert response.status == 200, response.body
    assert "access_token" in response.json()


def test_chunked_body_of_64_kib_plus_one_is_413(chit: ChitServer, basic: str) -> None:
    response = post_chunked(chit, padded_form("grant_type=client_credentials", MAX_BODY + 1), basic)
    assert_refused(response, 413)


def test_chunked_body_is_refused_as_soon_as_it_passes_the_limit(chit: ChitServer, basic: str) -> None:
    # 64 KiB + 1 sent, the body not finished: the answer cannot wait for the end of an endless body
    body = padded_form("grant_type=client_credentials", MAX_BODY + 1)
    assert_refused(post_chunked(chit, body, basic, terminate=False), 413)


# --- parameters ----------------------------------------------------------------------------------


def test_parameter_of_4_kib_is_accepted(chit: ChitServer, basic: str) -> None:
    # RFC 6749 §3.2: unknown parameters are ignored, so the request succeeds when the size is accepted
    body = b"grant_type=client_credentials&extra=" + b"a" * MAX_PARAMETER
    response = post(chit, "/oauth2/token", body, basic)
    assert response.status == 200, response.body


def test_parameter_of_4_kib_plus_one_is_invalid_request(chit: ChitServer, basic: str) -> None:
    body = b"grant_type=client_credentials&extra=" + b"a" * (MAX_PARAMETER + 1)
    assert_refused(post(chit, "/oauth2/token", body, basic), 400)


def test_parameter_size_counts_the_decoded_value(chit: ChitServer, basic: str) -> None:
    accepted = b"grant_type=client_credentials&extra=" + b"%C3%A9" * (MAX_PARAMETER // 2)
    response = post(chit, "/oauth2/token", accepted, basic)
    assert response.status == 200, response.body
    refused = b"grant_type=client_credentials&extra=" + b"%C3%A9" * (MAX_PARAMETER // 2) + b"%41"
    assert_refused(post(chit, "/oauth2/token", refused, basic), 400)


def test_parameter_name_over_4_kib_is_invalid_request(chit: ChitServer, basic: str) -> None:
    accepted = b"grant_type=client_credentials&" + b"n" * MAX_PARAMETER + b"=1"
    assert post(chit, "/oauth2/token", accepted, basic).status == 200
    refused = b"grant_type=client_credentials&" + b"n" * (MAX_PARAMETER + 1) + b"=1"
    assert_refused(post(chit, "/oauth2/token", refused, basic), 400)


def test_client_secret_of_16_kib_is_not_a_token_parameter(chit: ChitServer) -> None:
    body = f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=".encode() + b"s" * (16 * KIB)
    assert_refused(post(chit, "/oauth2/token", body), 400)


def test_refresh_token_of_16_kib_is_accepted(chit: ChitServer) -> None:
    body = b"grant_type=refresh_token&client_id=chit-cli&refresh_token=" + b"r" * MAX_TOKEN_PARAMETER
    response = post(chit, "/oauth2/token", body)
    assert response.status == 400, response.body
    assert response.json()["error"] == "invalid_grant"


def test_refresh_token_of_16_kib_plus_one_is_invalid_request(chit: ChitServer) -> None:
    body = b"grant_type=refresh_token&client_id=chit-cli&refresh_token=" + b"r" * (MAX_TOKEN_PARAMETER + 1)
    assert_refused(post(chit, "/oauth2/token", body), 400)


def test_introspected_token_of_16_kib_is_accepted(chit: ChitServer, basic: str) -> None:
    response = post(chit, "/oauth2/introspect", b"token=" + b"t" * MAX_TOKEN_PARAMETER, basic)
    assert response.status == 200, response.body
    assert response.json() == {"active": False}


def test_introspected_token_of_16_kib_plus_one_is_invalid_request(chit: ChitServer, basic: str) -> None:
    response = post(chit, "/oauth2/introspect", b"token=" + b"t" * (MAX_TOKEN_PARAMETER + 1), basic)
    assert_refused(response, 400)


def test_revoked_token_of_16_kib_is_accepted(chit: ChitServer, basic: str) -> None:
    response = post(chit, "/oauth2/revoke", b"token=" + b"t" * MAX_TOKEN_PARAMETER, basic)
    assert response.status == 200, response.body


def test_revoked_token_of_16_kib_plus_one_is_invalid_request(chit: ChitServer, basic: str) -> None:
    response = post(chit, "/oauth2/revoke", b"token=" + b"t" * (MAX_TOKEN_PARAMETER + 1), basic)
    assert_refused(response, 400)


# --- counts --------------------------------------------------------------------------------------


def scope_of(count: int) -> str:
    return " ".join(f"svc:things:a{i:03d}" for i in range(count))


def test_100_scope_values_are_accepted(chit: ChitServer, basic: str) -> None:
    body = f"grant_type=client_credentials&scope={scope_of(100).replace(' ', '+')}".encode()
    response = post(chit, "/oauth2/token", body, basic)
    assert response.status == 200, response.body
    assert response.json()["scope"].split(" ") == scope_of(100).split(" ")


def test_101_scope_values_are_invalid_request(chit: ChitServer, basic: str) -> None:
    body = f"grant_type=client_credentials&scope={scope_of(101).replace(' ', '+')}".encode()
    assert_refused(post(chit, "/oauth2/token", body, basic), 400)


def form_with_fields(count: int) -> bytes:
    return "&".join(["grant_type=client_credentials", *(f"f{i:03d}=x" for i in range(count - 1))]).encode()


def test_100_form_fields_are_accepted(chit: ChitServer, basic: str) -> None:
    assert form_with_fields(100).count(b"&") == 99
    response = post(chit, "/oauth2/token", form_with_fields(100), basic)
    assert response.status == 200, response.body


def test_101_form_fields_are_invalid_request(chit: ChitServer, basic: str) -> None:
    assert_refused(post(chit, "/oauth2/token", form_with_fields(101), basic), 400)


def test_101_form_fields_are_refused_at_introspection_too(chit: ChitServer, basic: str) -> None:
    body = "&".join(["token=abc", *(f"f{i:03d}=x" for i in range(100))]).encode()
    assert_refused(post(chit, "/oauth2/introspect", body, basic), 400)


def test_server_still_serves_after_the_refusals(chit: ChitServer, basic: str) -> None:
    response = post(chit, "/oauth2/token", b"grant_type=client_credentials", basic)
    assert response.status == 200, response.body
    assert "Traceback" not in chit.log()
