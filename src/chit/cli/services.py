"""``chit service register MANIFEST``, ``chit service list`` and ``chit service remove SERVICE_ID``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, refusals
from chit.cli.tables import field, show
from chit.policy.manifest import load_manifest

app = typer.Typer(help="Manage registered services.", no_args_is_help=True)


@app.command("remove")
def remove(
    service_id: Annotated[str, typer.Argument(help="The id of a registered service.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a service: its permissions, its roles and its own client, whose tokens stop working at
    once. Refused, with the list, while anyone else still holds one of its permissions or roles."""
    with administration(data_dir, database_url) as admin:
        admin.remove_service(service_id)
    typer.echo(f"Removed service {service_id}")


@app.command("register")
def register(
    manifest: Annotated[Path, typer.Argument(help="The service's manifest (TOML).")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register or update a service from its manifest (idempotent). Creates the service's client
    for client_credentials and prints its secret once, on first registration."""
    with refusals():  # a file that cannot be read, or is too large, is refused like a bad manifest
        parsed = load_manifest(manifest)
    with administration(data_dir, database_url) as admin:
        outcome, secret = admin.register_service(parsed)
    data = {
        "service": parsed.id,
        "created": outcome.created,
        "changed": outcome.changed,
        "client_id": parsed.id,
        "client_secret": secret,
        "roles": sorted(parsed.roles),
        "permissions": sorted(parsed.permissions),
    }

    def human(d: dict[str, object]) -> str:
        if not outcome.changed:
            return f"Service {parsed.id} is registered and unchanged"
        verb = "Registered" if outcome.created else "Updated"
        lines = [f"{verb} service {parsed.id}: {len(parsed.permissions)} permissions, {len(parsed.roles)} roles"]
        if secret:
            lines += [f"client_id: {parsed.id}", f"client_secret: {secret}", "(shown once)"]
        return "\n".join(lines)

    emit(data, as_json, human)


@app.command("list")
def list_services(as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List registered services and the permissions they define."""
    with administration(data_dir, database_url) as admin:
        defined = admin.server.store.defined_permissions()
        services = [
            {
                "id": s.id,
                "description": s.description,
                "permissions": sorted(p for p in defined if p.startswith(s.id + ":")),
                "on_behalf": sorted(s.on_behalf),
                "deferred": sorted(s.deferred),
            }
            for s in admin.services()
        ]
    columns = [
        ("Service", field("id")),
        ("Description", field("description")),
        ("Permissions", field("permissions")),
        ("On behalf of users", field("on_behalf")),
    ]
    show("services", services, columns, as_json=as_json, empty="no services registered")
