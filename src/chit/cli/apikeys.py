"""``chit api-key create / list / revoke / rotate``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, permission_option
from chit.cli.tables import field, show
from chit.server.administration import Administration
from chit.storage.records import ApiKeyRecord

app = typer.Typer(help="Manage API keys for bots.", no_args_is_help=True)


def _when(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def describe(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "owner_id": record.owner_id,
        "scope": sorted(record.scope),
        "created_at": _when(record.created_at),
        "expires_at": _when(record.expires_at),
        "last_used_at": _when(record.last_used_at),
        "revoked_at": _when(record.revoked_at),
    }


@app.command("create")
def create(
    owner: Annotated[str, typer.Option("--owner", help="user:NAME, client:ID or a bare name.")],
    scope: Annotated[list[str], typer.Option("--scope", help="A permission the key carries (repeatable).")],
    expires_in: Annotated[int | None, typer.Option("--expires-in", min=60, help="Lifetime in seconds.")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key no wider than its owner's permissions; the key is printed once."""
    permissions = permission_option(scope) or []
    with administration(data_dir, database_url) as admin:
        created = admin.create_api_key(owner, permissions, expires_in)
    data = {**describe(created.record), "api_key": created.secret}
    emit(data, as_json, lambda d: f"Created API key {d['id']}\napi_key: {d['api_key']}\n(shown once)")


def owner_names(admin: Administration) -> dict[str, str]:
    """Principal ids to ``user:NAME`` / ``client:ID``."""
    names = {u.id: f"user:{u.username}" for u in admin.server.store.users()}
    names.update({c.id: f"client:{c.client_id}" for c in admin.server.store.clients()})
    return names


def status(key: Mapping[str, Any]) -> str:
    if key["revoked_at"]:
        return "REVOKED"
    if key["expires_at"] and key["expires_at"] <= datetime.now(UTC).isoformat():
        return "expired"
    return "active"


@app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's keys.")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List API keys with their owners (never their secrets)."""
    with administration(data_dir, database_url) as admin:
        names = owner_names(admin)
        keys = [{**describe(k), "owner": names.get(k.owner_id, k.owner_id)} for k in admin.list_api_keys(owner)]
    columns = [
        ("Key ID", field("id")),
        ("Owner", field("owner")),
        ("Scope", field("scope")),
        ("Status", status),
        ("Expires", field("expires_at")),
        ("Last used", field("last_used_at")),
    ]
    show("api_keys", keys, columns, as_json=as_json, empty="no API keys")


@app.command("revoke")
def revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke an API key: it can no longer be exchanged for tokens."""
    with administration(data_dir, database_url) as admin:
        revoked = admin.revoke_api_key(key_id)
    typer.echo(f"Revoked API key {key_id}" if revoked else f"API key {key_id} was already revoked")


@app.command("rotate")
def rotate(key_id: str, as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Give an API key a new secret; the old one stops working at once."""
    with administration(data_dir, database_url) as admin:
        secret = admin.rotate_api_key(key_id)
    emit({"id": key_id, "api_key": secret}, as_json, lambda d: f"api_key: {d['api_key']}\n(shown once)")
