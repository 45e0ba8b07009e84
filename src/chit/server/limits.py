"""Request size limits (DESIGN §4), enforced by chit itself before any parsing work.

Each limit is the largest size accepted: request line 8 KiB (else 414), all header lines together
16 KiB (else 431), body 64 KiB (else 413). A header line counts as ``name: value`` plus CRLF, the
request line as ``METHOD target HTTP/x.y``, as on the wire.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADERS = 16 * 1024
MAX_BODY = 64 * 1024


async def _refuse(send: Send, status: int, description: str) -> None:
    body = json.dumps({"error": "invalid_request", "error_description": description}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def request_line_length(scope: Scope) -> int:
    target = len(scope.get("raw_path") or scope["path"].encode())
    query = scope.get("query_string", b"")
    if query:
        target += 1 + len(query)
    return len(scope["method"]) + 1 + target + 1 + len("HTTP/") + len(scope.get("http_version", "1.1"))


class SizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_request_line: int = MAX_REQUEST_LINE,
        max_headers: int = MAX_HEADERS,
        max_body: int = MAX_BODY,
    ) -> None:
        self.app = app
        self.max_request_line = max_request_line
        self.max_headers = max_headers
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if request_line_length(scope) > self.max_request_line:
            await _refuse(send, 414, f"request line longer than {self.max_request_line} bytes")
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_headers:
            await _refuse(send, 431, f"request headers longer than {self.max_headers} bytes")
            return
        for key, value in headers:
            if key == b"content-length":
                if not value.isdigit():
                    await _refuse(send, 400, "malformed Content-Length")
                    return
                if int(value) > self.max_body:
                    await _refuse(send, 413, f"request body larger than {self.max_body} bytes")
                    return
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Bodies are small by contract, so read the whole body first: a refusal then happens
        # before the app has seen anything, and the app gets it replayed in one message.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body:
                await _refuse(send, 413, f"request body larger than {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the head limits also checked while the head is parsed.

    httptools hands on a request target of any length but cannot parse one over 64 KiB, and uvicorn
    then answers a plain-text 400 of its own before the app runs. Here a target longer than the
    request-line limit is refused with chit's 414 as soon as it is seen, headers over their limit with
    431, and any request that HTTP parsing rejects answers a JSON 400 ``invalid_request``. The exact
    boundaries stay with ``SizeLimitMiddleware``.
    """

    _refusal: tuple[int, str] | None = None
    _header_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._refusal = None
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_LINE:
            self._refusal = (414, f"request line longer than {MAX_REQUEST_LINE} bytes")
            raise ValueError(self._refusal[1])  # httptools stops parsing; uvicorn calls send_400_response

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADERS:
            self._refusal = (431, f"request headers longer than {MAX_HEADERS} bytes")
            raise ValueError(self._refusal[1])

    def send_400_response(self, msg: str) -> None:
        status, description = self._refusal or (400, "malformed HTTP request")
        body = json.dumps({"error": "invalid_request", "error_description": description}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
