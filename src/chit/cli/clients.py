"""``chit client add`` / ``chit client list``."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, permission_option
from chit.cli.tables import field, show, when
from chit.server.endpoints.token import KNOWN_GRANT_TYPES

app = typer.Typer(help="Manage OAuth2 clients.", no_args_is_help=True)
CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")


def check_client_id(value: str) -> str:
    if not CLIENT_ID.match(value):
        raise typer.BadParameter(
            "a client id is 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_grants(values: list[str] | None) -> list[str] | None:
    for value in values or ():
        if value not in KNOWN_GRANT_TYPES:
            raise typer.BadParameter(f"unknown grant {value!r}; choose from {', '.join(sorted(KNOWN_GRANT_TYPES))}")
    return values


@app.command("add")
def add(
    client_id: Annotated[str, typer.Argument(callback=check_client_id)],
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", callback=check_grants, help="Allowed grant, as on the wire (repeatable)."),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Permission the client holds and caps its users' tokens to (repeatable)."),
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="A public client: no secret.")] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a client and print its secret once (default grant: client_credentials)."""
    grants = sorted(set(grant or ["client_credentials"]))
    permissions = permission_option(scope)
    with administration(data_dir, database_url) as admin:
        _client, secret = admin.create_client(client_id, grant_types=grants, scope=permissions, public=public)
    data = {
        "client_id": client_id,
        "client_secret": secret,
        "grant_types": grants,
        "scope": permissions,
        "public": public,
    }
    emit(
        data,
        as_json,
        lambda d: (
            f"Created client {d['client_id']} (grants: {' '.join(d['grant_types'])})"
            + ("" if public else f"\nclient_secret: {d['client_secret']}\n(shown once)")
        ),
    )


@app.command("list")
def list_clients(as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List clients (services' own clients among them), their grants, scope caps and roles; never secrets.
    A scope of null (shown as "no cap") means the client does not cap its users' tokens."""
    with administration(data_dir, database_url) as admin:
        clients = [
            {
                "client_id": c.client_id,
                "id": c.id,
                "public": c.public,
                "grant_types": sorted(c.grant_types),
                "scope": None if c.scope is None else sorted(c.scope),
                "roles": admin.server.store.roles_of(c.id),
                "disabled": c.disabled,
                "created_at": when(c.created_at),
            }
            for c in admin.clients()
        ]
    columns = [
        ("Client ID", field("client_id")),
        ("ID", field("id")),
        ("Grants", field("grant_types")),
        ("Scope", lambda c: "no cap" if c["scope"] is None else c["scope"]),
        ("Roles", field("roles")),
        ("Public", field("public")),
        ("Disabled", field("disabled")),
    ]
    show("clients", clients, columns, as_json=as_json, empty="no clients")
