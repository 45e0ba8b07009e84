"""The access log of ``chit serve``: one line per request, plain for people or JSON for machines.

An ASGI middleware around the app (uvicorn's own access log knows no duration) logs to the
``chit.access`` logger; ``log_config`` gives uvicorn the logging setup each worker process applies.
Only the path is logged, never the query string (it may carry a secret someone put there).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "chit.access"
LOG_FORMATS = ("plain", "json")
logger = logging.getLogger(ACCESS_LOGGER)


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                extra = {
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": f"{client[0]}:{client[1]}" if client else "-",
                }
                # the record without ``Logger.info``'s search for its caller: every line comes from here
                logger.handle(
                    logger.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "request", (), None, None, extra)
                )


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return datetime.fromtimestamp(epoch_second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _timestamp(record: logging.LogRecord) -> str:
    """``2026-12-06T19:30:00.123Z``: the second formatted once, as many lines share it."""
    second = int(record.created)
    return f"{_second(second)}.{int((record.created - second) * 1000):03d}Z"


class PlainAccessFormatter(logging.Formatter):
    """``2026-12-06T19:30:00.123Z 127.0.0.1:50412 "GET /healthz" 200 1.2 ms``"""

    def format(self, record: logging.LogRecord) -> str:
        r: Any = record
        client, path = _printable(r.client), _printable(r.path)
        return f'{_timestamp(record)} {client} "{r.method} {path}" {r.status} {r.duration_ms} ms'


def _printable(text: str) -> str:
    """``text`` with what is not printable (a decoded ``%0A`` or ``%1B`` of a path) and ``"`` escaped: a line of
    the log is one request, and reads the same in a terminal."""
    if text.isprintable() and '"' not in text:
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(c: str) -> str:
    if c == '"':
        return '\\"'
    return c if c.isprintable() else c.encode("unicode_escape").decode("ascii")


class JsonAccessFormatter(logging.Formatter):
    """One JSON object per line: time, method, path, status, duration_ms, client."""

    def format(self, record: logging.LogRecord) -> str:
        r: Any = record
        return json.dumps(
            {
                "time": _timestamp(record),
                "method": r.method,
                "path": r.path,
                "status": r.status,
                "duration_ms": r.duration_ms,
                "client": r.client,
            }
        )


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging setup plus the access log in ``log_format`` on stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    formatter = JsonAccessFormatter if log_format == "json" else PlainAccessFormatter
    config["formatters"]["chit_access"] = {"()": f"{formatter.__module__}.{formatter.__qualname__}"}
    config["handlers"]["chit_access"] = {
        "formatter": "chit_access",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["chit_access"], "level": "INFO", "propagate": False}
    return config


def create_app_from_env() -> ASGIApp:
    """The factory each uvicorn worker calls: chit's app, with the access log around it."""
    from chit.server.app import create_app_from_env as create

    return AccessLogMiddleware(create())
