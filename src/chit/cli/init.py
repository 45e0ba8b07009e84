"""``chit init``: create an installation (data directory, schema, keys, super admin) and exit."""

from __future__ import annotations

import typer

from chit.cli.common import DatabaseUrl, DataDir, refusals, report_bootstrap, settings_for


def init(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Create the data directory, the schema, the keys and the super admin 'admin' (password from
    CHIT_ADMIN_PASSWORD, or generated and printed once), then exit. Safe to run again."""
    with refusals():
        settings = settings_for(data_dir, database_url)
        report_bootstrap(settings)
    typer.echo(f"chit installation ready at {settings.data_dir}", err=True)
