"""``chit admin appoint USERNAME --service SERVICE_ID``."""

from __future__ import annotations

from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, administration

app = typer.Typer(help="Delegated administration.", no_args_is_help=True)


@app.command("appoint")
def appoint(
    username: str,
    service: Annotated[str, typer.Option("--service", help="The service they will administer.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a user the admin of one service: they may grant and revoke its roles, nothing else."""
    with administration(data_dir, database_url) as admin:
        added = admin.appoint(username, service)
    typer.echo(f"{username} administers {service}" if added else f"{username} already administers {service}")
