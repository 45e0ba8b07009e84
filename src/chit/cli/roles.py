"""``chit role create``, ``chit grant`` and ``chit revoke-grant``."""

from __future__ import annotations

from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, permission_option

app = typer.Typer(help="Manage roles.", no_args_is_help=True)


@app.command("create")
def create(
    name: str,
    permission: Annotated[list[str], typer.Option("--permission", help="A permission of the role (repeatable).")],
    description: Annotated[str, typer.Option("--description", help="What the role is for.")] = "",
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a global role: a named bundle of permissions that registered services define."""
    permissions = permission_option(permission) or []
    with administration(data_dir, database_url) as admin:
        admin.create_role(name, permissions, description)
    emit({"name": name, "permissions": permissions}, as_json, lambda d: f"Created role {d['name']}")


@app.command("list")
def list_roles(as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List roles and their permissions."""
    with administration(data_dir, database_url) as admin:
        roles = admin.server.store.roles()
    emit(
        {"roles": roles},
        as_json,
        lambda d: "\n".join(f"{r['name']}: {' '.join(r['permissions'])}" for r in d["roles"]),
    )


def grant(principal: str, role: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Grant a role to a user or client (PRINCIPAL: user:NAME, client:ID, or a bare name naming one)."""
    with administration(data_dir, database_url) as admin:
        added = admin.grant(principal, role)
    typer.echo(f"Granted {role} to {principal}" if added else f"{principal} already holds {role}")


def revoke_grant(principal: str, role: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a role from a user or client; their next token (or refresh) no longer carries it."""
    with administration(data_dir, database_url) as admin:
        removed = admin.revoke_grant(principal, role)
    typer.echo(f"Revoked {role} from {principal}" if removed else f"{principal} did not hold {role}")
