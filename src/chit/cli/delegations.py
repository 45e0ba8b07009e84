"""``chit delegation list / revoke``: deferred delegations, a service's handle to act for a user later."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration
from chit.cli.tables import field, show, when
from chit.server.administration import delegation_state
from chit.storage.records import DelegationRecord, User

app = typer.Typer(help="Manage deferred delegations: a service's right to act for a user later.", no_args_is_help=True)


def describe(record: DelegationRecord, user: User | None, now: int) -> dict[str, Any]:
    return {
        "id": record.id,
        "user": None if user is None else user.username,
        "user_id": record.subject_id,
        "service": record.client_id,
        "scope": sorted(record.scope),
        "job_id": record.job_id,
        "created_at": when(record.created_at),
        "expires_at": when(record.expires_at),
        "revoked_at": when(record.revoked_at),
        "last_used_at": when(record.last_used_at),
        "redemptions": record.redemptions,
        "state": delegation_state(record, user, now),
    }


@app.command("list")
def list_delegations(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's delegations (a username).")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List deferred delegations with their users and services (never their secrets)."""
    with administration(data_dir, database_url) as admin:
        records = admin.delegations(user)
        store = admin.server.store
        users = {user_id: store.user_by_id(user_id) for user_id in {r.subject_id for r in records}}
        now = admin.server.now()
        delegations = [describe(r, users[r.subject_id], now) for r in records]
    columns = [
        ("Delegation ID", field("id")),
        ("User", lambda d: d["user"] or d["user_id"]),
        ("Service", field("service")),
        ("Scope", field("scope")),
        ("Job", field("job_id")),
        ("State", field("state")),
        ("Expires", field("expires_at")),
        ("Last used", field("last_used_at")),
    ]
    show("delegations", delegations, columns, as_json=as_json, empty="no delegations")


@app.command("revoke")
def revoke(delegation_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a deferred delegation: its handle can no longer be redeemed, and the tokens redeemed from it stop
    working at once."""
    with administration(data_dir, database_url) as admin:
        revoked = admin.revoke_delegation(delegation_id)
    typer.echo(f"Revoked delegation {delegation_id}" if revoked else f"Delegation {delegation_id} was already revoked")
