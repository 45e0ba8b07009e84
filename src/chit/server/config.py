"""The auth server's settings: one frozen value, built from the CLI or the environment."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chit.core.keys import Algorithm, check_algorithm
from chit.errors import ConfigurationError
from chit.storage.engine import sqlite_url

DEFAULT_PORT = 8700
SETTINGS_ENV = "CHIT_SERVER_SETTINGS"  # hands the settings to uvicorn worker processes


def default_data_dir() -> Path:
    return Path(os.environ.get("CHIT_DATA_DIR") or "chit-data")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    issuer: str
    signing_alg: Algorithm = "RS256"
    access_token_ttl: int = 600
    refresh_idle_ttl: int = 14 * 24 * 3600
    refresh_absolute_ttl: int = 30 * 24 * 3600
    jwks_max_age: int = 300
    leeway: int = 60
    # brute force (DESIGN §4): per account after N failures in a row; per source after M in a window
    account_max_failures: int = 10
    source_max_failures: int = 100
    source_window: int = 15 * 60
    lock_seconds: int = 60
    max_lock_seconds: int = 15 * 60
    # the longest a request waits for a database lock another session holds, then 503 + Retry-After
    db_lock_timeout_ms: int = 750
    # delegation (DESIGN §4): actors a chain may hold; the longest a deferred delegation may live
    max_delegation_depth: int = 4
    max_deferred_ttl: int = 7 * 24 * 3600
    # the revocation feed (DESIGN §4): Redis to publish events on (None: the embedded feed alone); how
    # often a quiet stream says it is alive (seconds); how often a stream looks for other processes' events (ms)
    redis_url: str | None = None
    feed_heartbeat: int = 5
    feed_poll_ms: int = 100

    @property
    def key_retention(self) -> int:
        """How long a retired key stays published: the longest a token it signed can be accepted."""
        return self.access_token_ttl + self.leeway + self.jwks_max_age

    def to_env(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "data_dir": str(self.data_dir)})

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigurationError(f"{SETTINGS_ENV} is not set")
        values: dict[str, Any] = json.loads(raw)
        values["data_dir"] = Path(values["data_dir"])
        return cls(**values)


def check_issuer(issuer: str) -> str:
    """``issuer`` must be https, except on loopback hosts; no query or fragment (RFC 8414 §2)."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"issuer {issuer!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"issuer {issuer!r} must not have a query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(f"issuer {issuer!r} must use https (plain http only on loopback hosts)")
    return issuer.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_settings(
    *,
    data_dir: Path | None = None,
    database_url: str | None = None,
    issuer: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    signing_alg: str | None = None,
    redis_url: str | None = None,
) -> Settings:
    data_dir = (data_dir or default_data_dir()).resolve()
    database_url = database_url or os.environ.get("CHIT_DATABASE_URL") or sqlite_url(data_dir)
    display_host = f"[{host}]" if ":" in host else host
    issuer = check_issuer(issuer or os.environ.get("CHIT_ISSUER") or f"http://{display_host}:{port}")
    alg = check_algorithm(signing_alg or os.environ.get("CHIT_SIGNING_ALG") or "RS256")
    redis_url = redis_url or os.environ.get("CHIT_REDIS_URL") or None
    if redis_url is not None:
        check_redis_url(redis_url)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        issuer=issuer,
        signing_alg=alg,
        redis_url=redis_url,
        **_tuning_from_env(),
    )


def check_redis_url(url: str) -> str:
    """``url`` must be a redis://, rediss:// or unix:// URL with a host (or a socket path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigurationError(f"--redis-url {url!r} is not a redis://host[:port][/db] URL")
    return url


# Lifetimes and limits a deployment may tune, as environment variables (whole seconds / counts / ms).
TUNING_ENV = {
    "CHIT_ACCESS_TOKEN_TTL": "access_token_ttl",
    "CHIT_REFRESH_IDLE_TTL": "refresh_idle_ttl",
    "CHIT_REFRESH_ABSOLUTE_TTL": "refresh_absolute_ttl",
    "CHIT_JWKS_MAX_AGE": "jwks_max_age",
    "CHIT_ACCOUNT_MAX_FAILURES": "account_max_failures",
    "CHIT_SOURCE_MAX_FAILURES": "source_max_failures",
    "CHIT_SOURCE_WINDOW": "source_window",
    "CHIT_LOCK_SECONDS": "lock_seconds",
    "CHIT_MAX_LOCK_SECONDS": "max_lock_seconds",
    "CHIT_DB_LOCK_TIMEOUT_MS": "db_lock_timeout_ms",
    "CHIT_MAX_DELEGATION_DEPTH": "max_delegation_depth",
    "CHIT_MAX_DEFERRED_TTL": "max_deferred_ttl",
    "CHIT_FEED_HEARTBEAT": "feed_heartbeat",
    "CHIT_FEED_POLL_MS": "feed_poll_ms",
}


def _tuning_from_env() -> dict[str, int]:
    values = {}
    for env, name in TUNING_ENV.items():
        raw = os.environ.get(env)
        if raw is None:
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigurationError(f"{env} must be a positive whole number, not {raw!r}")
        values[name] = int(raw)
    return values


def listen_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on ``host:port`` now (``address already in use``...), or None: checked
    before anything is created, since uvicorn binds it again right after."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None
