"""``chit serve``: bootstrap the data directory, then run the auth server on uvicorn."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated

import typer
import uvicorn

from chit.cli.common import DatabaseUrl, DataDir, refusals, report_bootstrap
from chit.server.config import DEFAULT_PORT, SETTINGS_ENV, build_settings
from chit.server.limits import LimitedHttpToolsProtocol
from chit.storage.keyfiles import KeyStore


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
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the auth server. On an empty data directory, first create the schema, the keys and the
    super admin 'admin' (password from CHIT_ADMIN_PASSWORD, or generated and printed once)."""
    with refusals():
        settings = build_settings(
            data_dir=data_dir,
            database_url=database_url,
            issuer=issuer,
            host=host,
            port=port,
            signing_alg=signing_alg,
        )
        report_bootstrap(settings)
        KeyStore(settings.data_dir, timedelta(seconds=settings.key_retention)).note_jwks_max_age(settings.jwks_max_age)
    os.environ[SETTINGS_ENV] = settings.to_env()
    typer.echo(f"chit auth server: issuer {settings.issuer}, data in {settings.data_dir}", err=True)
    uvicorn.run(
        "chit.server.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=LimitedHttpToolsProtocol,  # chit's head limits while parsing (chit.server.limits)
        loop="uvloop",
        access_log=False,
        server_header=False,
        log_level="warning",
    )
