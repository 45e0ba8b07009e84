"""``chit role create / list / grants``, ``chit grant`` and ``chit revoke-grant``.

``chit grant PRINCIPAL ROLE`` is the contract's (DESIGN §4), so the list of grants is ``chit role grants``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, permission_option
from chit.cli.tables import field, show

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
    """List roles and their permissions (a service's roles are named after it)."""
    with administration(data_dir, database_url) as admin:
        roles = admin.roles()
    columns = [
        ("Role", field("name")),
        ("Service", field("service")),
        ("Permissions", field("permissions")),
        ("Description", field("description")),
    ]
    show("roles", roles, columns, as_json=as_json, empty="no roles")


def describe_grant(principal: str, role: str) -> dict[str, Any]:
    """A grant as the store describes its holder (``user NAME``, ``client ID``, or a bare id)."""
    kind, _, name = principal.partition(" ")
    if kind not in ("user", "client") or not name:
        kind, name = "unknown", principal
    return {"principal": f"{kind}:{name}", "type": kind, "name": name, "role": role}


@app.command("grants")
def list_grants(
    role: Annotated[str | None, typer.Option("--role", help="Only the grants of this role.")] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only the grants of this user:NAME or client:ID.")
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List who holds which role. Change them with chit grant PRINCIPAL ROLE and chit revoke-grant PRINCIPAL ROLE."""
    with administration(data_dir, database_url) as admin:
        grants = [describe_grant(p, r) for p, r in admin.grants()]
    if role is not None:
        grants = [g for g in grants if g["role"] == role]
    if principal is not None:
        grants = [g for g in grants if principal in (g["principal"], g["name"])]
    columns = [("Role", field("role")), ("Type", field("type")), ("Name", field("name"))]
    show("grants", grants, columns, as_json=as_json, empty="no grants")


def grant(principal: str, role: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Grant a role to a user or client (PRINCIPAL: user:NAME, client:ID, or a bare name naming one).
    chit role grants lists the grants."""
    with administration(data_dir, database_url) as admin:
        added = admin.grant(principal, role)
    typer.echo(f"Granted {role} to {principal}" if added else f"{principal} already holds {role}")


def revoke_grant(principal: str, role: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a role from a user or client; their next token (or refresh) no longer carries it."""
    with administration(data_dir, database_url) as admin:
        removed = admin.revoke_grant(principal, role)
    typer.echo(f"Revoked {role} from {principal}" if removed else f"{principal} did not hold {role}")
