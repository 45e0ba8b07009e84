"""``chit service register MANIFEST``, ``chit service list``, ``chit service key SERVICE_ID`` and
``chit service remove SERVICE_ID``."""

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
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            metavar="ed25519/HEX",
            help="The service's own public key; without it, a service with no key gets a new pair.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register or update a service from its manifest (idempotent). Creates the service's client
    for client_credentials and prints its secret once, on first registration. A service with no key
    gets an Ed25519 pair: the public half is published, the private half waits in the data directory
    for `chit service key SERVICE_ID`."""
    with refusals():  # a file that cannot be read, or is too large, is refused like a bad manifest
        parsed = load_manifest(manifest)
    with administration(data_dir, database_url) as admin:
        registered = admin.register_service(parsed, public_key)
    outcome, secret = registered.outcome, registered.client_secret
    data = {
        "service": parsed.id,
        "created": outcome.created,
        "changed": outcome.changed,
        "client_id": parsed.id,
        "client_secret": secret,
        "roles": sorted(parsed.roles),
        "permissions": sorted(parsed.permissions),
        "public_key": registered.public_key,
        "key_changed": outcome.key_set,
        "private_key_waiting": registered.private_key_waiting,
    }

    def human(d: dict[str, object]) -> str:
        if not outcome.changed:
            lines = [f"Service {parsed.id} is registered and unchanged"]
        else:
            verb = "Registered" if outcome.created else "Updated"
            lines = [f"{verb} service {parsed.id}: {len(parsed.permissions)} permissions, {len(parsed.roles)} roles"]
        if secret:
            lines += [f"client_id: {parsed.id}", f"client_secret: {secret}", "(shown once)"]
        if outcome.key_set:
            lines.append(f"public_key: {registered.public_key}")
        if outcome.key_set and registered.private_key_waiting:
            lines.append(f"(its private key waits in the data directory: `chit service key {parsed.id}` hands it over)")
        return "\n".join(lines)

    emit(data, as_json, human)


@app.command("key")
def key(
    service_id: Annotated[str, typer.Argument(help="The id of a registered service.")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Make a new pair; its public half replaces the published key.")
    ] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the service's private key once: the one registration left in the data directory, which is
    deleted, or with --rotate a new one, whose public half is published at once. The service signs
    third-party blocks with it."""
    with administration(data_dir, database_url) as admin:
        pair = admin.rotate_service_key(service_id) if rotate else admin.hand_over_service_key(service_id)
    data = {"service": service_id, "public_key": pair.public_key, "private_key": pair.private_key, "rotated": rotate}

    def human(d: dict[str, object]) -> str:
        return f"public_key: {pair.public_key}\nprivate_key: {pair.private_key}\n(shown once)"

    emit(data, as_json, human)


@app.command("list")
def list_services(as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List registered services, the permissions they define and their public keys."""
    with administration(data_dir, database_url) as admin:
        defined = admin.server.store.defined_permissions()
        services = [
            {
                "id": s.id,
                "description": s.description,
                "permissions": sorted(p for p in defined if p.startswith(s.id + ":")),
                "on_behalf": sorted(s.on_behalf),
                "deferred": sorted(s.deferred),
                "public_key": s.public_key,
            }
            for s in admin.services()
        ]
    columns = [
        ("Service", field("id")),
        ("Description", field("description")),
        ("Permissions", field("permissions")),
        ("On behalf of users", field("on_behalf")),
        ("Public key", field("public_key")),
    ]
    show("services", services, columns, as_json=as_json, empty="no services registered")
