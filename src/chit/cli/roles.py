"""``chit role create`` and ``chit grant``."""

from __future__ import annotations

from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, emit, fail, open_server, permission_option
from chit.server.authserver import AuthServer

app = typer.Typer(help="Manage roles.", no_args_is_help=True)


@app.command("create")
def create(
    name: str,
    permission: Annotated[list[str], typer.Option("--permission", help="A permission of the role (repeatable).")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a role: a named bundle of permissions."""
    permissions = permission_option(permission) or []
    with open_server(data_dir, database_url) as server:
        server.store.create_role(name, permissions, server.now())
    emit({"name": name, "permissions": permissions}, as_json, lambda d: f"Created role {d['name']}")


def resolve_principal(server: AuthServer, principal: str) -> str:
    """``user:NAME``, ``client:ID``, or a bare name that names exactly one of them."""
    kind, sep, name = principal.partition(":")
    user = client = None
    if sep and kind == "user":
        user = server.store.user_by_username(name)
    elif sep and kind == "client":
        client = server.store.client_by_client_id(name)
    else:
        user = server.store.user_by_username(principal)
        client = server.store.client_by_client_id(principal)
        if user and client:
            raise fail(f"{principal!r} names both a user and a client: write user:{principal} or client:{principal}")
    if user:
        return user.id
    if client:
        return client.id
    raise fail(f"no user or client {principal!r}")


def grant(
    principal: str,
    role: str,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Grant a role to a user or client."""
    with open_server(data_dir, database_url) as server:
        added = server.store.grant(resolve_principal(server, principal), role, server.now())
    typer.echo(f"Granted {role} to {principal}" if added else f"{principal} already holds {role}")
