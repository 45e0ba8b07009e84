"""What every command shares: the data-dir/database options, opening the store, output, exit codes.

Exit codes (DESIGN §4): 0 success, 1 a refused operation (one-line reason on stderr), 2 usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from chit.errors import ChitError, InvalidPermissionError
from chit.policy.permissions import Permission
from chit.server.administration import Administration, Caller
from chit.server.authserver import AuthServer
from chit.server.bootstrap import bootstrap, require_installation
from chit.server.config import Settings, build_settings

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $CHIT_DATA_DIR or ./chit-data).", show_default=False),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Database URL (default: SQLite in the data directory).", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

P = ParamSpec("P")
R = TypeVar("R")


def fail(reason: str) -> typer.Exit:
    typer.echo(f"chit: {reason}", err=True)
    return typer.Exit(1)


@contextmanager
def refusals() -> Iterator[None]:
    """Turn chit's own errors into exit code 1 with a one-line reason."""
    try:
        yield
    except ChitError as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def settings_for(data_dir: Path | None, database_url: str | None) -> Settings:
    return build_settings(data_dir=data_dir, database_url=database_url)


@contextmanager
def open_server(data_dir: Path | None, database_url: str | None) -> Iterator[AuthServer]:
    """The auth server's state for a command on an existing installation; a missing data directory or
    database is refused in one line (only ``chit serve`` and ``chit init`` create one)."""
    with refusals():
        settings = settings_for(data_dir, database_url)
        require_installation(settings)
        server = AuthServer(settings)
    try:
        with refusals():
            yield server
    finally:
        server.store.engine.dispose()


@contextmanager
def administration(data_dir: Path | None, database_url: str | None) -> Iterator[Administration]:
    """Administrative operations as the operator (whoever reads the data directory holds every key)."""
    with open_server(data_dir, database_url) as server:
        yield Administration(server, Caller.operator())


def report_bootstrap(settings: Settings) -> None:
    """Create what is missing of the installation (``chit serve``, ``chit init``); say so when it was."""
    result = bootstrap(settings)
    if result.admin_password is not None:
        typer.echo(
            f"Created the super admin 'admin' with password: {result.admin_password}\n"
            "(shown once; set CHIT_ADMIN_PASSWORD to choose it)",
            err=True,
        )


def emit(data: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        typer.echo(human(data))


def permission_option(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    result = []
    for value in values:
        try:
            result.append(str(Permission.parse(value)))
        except InvalidPermissionError as exc:
            raise typer.BadParameter(str(exc)) from None
    return sorted(set(result))
