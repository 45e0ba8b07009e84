"""``chit serve``: bootstrap the data directory, then run the auth server on uvicorn.

On start it prints where it answers (issuer, discovery, docs), its data directory and how to stop
it; it writes an access log on stderr (plain, or JSON lines with ``--log-format json``) and says
goodbye when it stops.

With ``--workers N`` above 1, the workers keep their Prometheus metrics in a fresh temporary directory
(``PROMETHEUS_MULTIPROC_DIR``, set before they start, removed when the server stops), so that
``/metrics`` tells the whole server's numbers whichever worker answers (``chit.server.metrics``).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from datetime import timedelta
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from chit.cli.common import DatabaseUrl, DataDir, fail, refusals, report_bootstrap
from chit.core.paths import OPENID_CONFIGURATION_PATH
from chit.errors import ConfigurationError
from chit.server.access_log import LOG_FORMATS, log_config
from chit.server.config import DEFAULT_PORT, SETTINGS_ENV, Settings, build_settings, check_redis_url, listen_problem
from chit.server.limits import LimitedHttpToolsProtocol
from chit.server.metrics import MULTIPROCESS_DIR_ENV
from chit.storage.keyfiles import KeyStore


class _Stopped(Exception):
    """SIGTERM/SIGINT after uvicorn shut down gracefully (it re-raises the signal it caught)."""


def _stop(_sig: int, _frame: FrameType | None) -> None:
    raise _Stopped


def check_log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_FORMATS)}")
    return value


def check_redis_option(value: str | None) -> str | None:
    """A bad ``--redis-url`` (or ``CHIT_REDIS_URL``) is a usage error, before anything is created."""
    if value is None:
        return None
    try:
        return check_redis_url(value)
    except ConfigurationError:
        raise typer.BadParameter(f"{value!r} is not a redis://host[:port][/db] (or rediss://, unix://) URL") from None


def banner(settings: Settings) -> str:
    return "\n".join(
        [
            f"chit auth server at {settings.issuer}",
            f"  discovery: {settings.issuer}{OPENID_CONFIGURATION_PATH}",
            f"  API docs:  {settings.issuer}/docs",
            f"  data:      {settings.data_dir}",
            "press Ctrl+C to stop",
        ]
    )


GOODBYE = "chit auth server stopped"


def check_listen(host: str, port: int) -> None:
    """Refuse a port already in use before anything is created."""
    problem = None if port == 0 else listen_problem(host, port)
    if problem is not None:
        raise fail(f"cannot listen on {host}:{port}: {problem}")


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="Public URL of this server (https, except on loopback).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    signing_alg: Annotated[
        str | None, typer.Option("--signing-alg", help="RS256 (default), ES256 or EdDSA for new keys.")
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            callback=check_log_format,
            help="Access log format: plain (default) or json (one object a line).",
        ),
    ] = "plain",
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="CHIT_REDIS_URL",
            callback=check_redis_option,
            help="Also publish revocations on this Redis (redis://host[:port][/db]).",
            show_default=False,
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            envvar="CHIT_FORWARDED_ALLOW_IPS",
            help="Proxies (comma-separated addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto"
            " are believed. By default none: a request's source is the connection's peer.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the auth server. On an empty data directory, first create the schema, the keys and the
    super admin 'admin' (password from CHIT_ADMIN_PASSWORD, or generated and printed once)."""
    check_listen(host, port)
    with refusals():
        settings = build_settings(
            data_dir=data_dir,
            database_url=database_url,
            issuer=issuer,
            host=host,
            port=port,
            signing_alg=signing_alg,
            redis_url=redis_url,
        )
        report_bootstrap(settings)
        KeyStore(settings.data_dir, timedelta(seconds=settings.key_retention)).note_jwks_max_age(settings.jwks_max_age)
    os.environ[SETTINGS_ENV] = settings.to_env()
    typer.echo(banner(settings), err=True)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    # one worker keeps its metrics in memory; several share theirs through files that start empty
    metrics_dir = tempfile.mkdtemp(prefix="chit-metrics-") if workers > 1 else None
    inherited_metrics_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
    if metrics_dir is not None:
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir  # the workers, spawned, inherit it before any import
    try:
        uvicorn.run(
            "chit.server.access_log:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=LimitedHttpToolsProtocol,  # chit's head limits while parsing (chit.server.limits)
            loop="uvloop",
            access_log=False,  # chit's own (chit.server.access_log), which knows each request's duration
            log_config=log_config(log_format),
            server_header=False,
            log_level="warning",
            # the source of a login counts against its limit and goes to the audit log: a client must not be able
            # to name it (uvicorn believes X-Forwarded-For from loopback by default, where a TLS proxy would sit)
            proxy_headers=forwarded_allow_ips is not None,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    except (_Stopped, KeyboardInterrupt):
        pass
    except SystemExit as exc:  # uvicorn could not start (it logged why: the port in use, ...)
        if exc.code not in (0, None):
            raise fail(f"the server could not start on {host}:{port}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if inherited_metrics_dir is None:
                os.environ.pop(MULTIPROCESS_DIR_ENV, None)
            else:
                os.environ[MULTIPROCESS_DIR_ENV] = inherited_metrics_dir
    typer.echo(GOODBYE, err=True)
