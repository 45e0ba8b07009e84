"""``chit session list`` / ``chit session revoke``: a session is a refresh-token family (one login)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, fail
from chit.cli.tables import field, show, when
from chit.storage.records import SessionRecord

app = typer.Typer(help="Manage users' sessions: one per login, each a family of refresh tokens.")


def describe(session: SessionRecord, usernames: dict[str, str], now: int) -> dict[str, Any]:
    return {
        "id": session.id,
        "user_id": session.user_id,
        "username": usernames.get(session.user_id),
        "client_id": session.client_id,
        "scope": sorted(session.scope),
        "created_at": when(session.created_at),
        "expires_at": when(session.expires_at),
        "revoked_at": when(session.revoked_at),
        "revoked_reason": session.revoked_reason,
        "active": session.revoked_at is None and session.expires_at > now,
    }


def state(session: Mapping[str, Any]) -> str:
    if session["revoked_at"]:
        return f"revoked ({session['revoked_reason']})" if session["revoked_reason"] else "revoked"
    return "active" if session["active"] else "expired"


@app.command("list")
def list_sessions(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions (a username).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also show revoked and expired sessions.")] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List users' sessions (logins that can still be refreshed); --all shows ended ones too."""
    with administration(data_dir, database_url) as admin:
        user_id = None
        if user is not None:
            record = admin.server.store.user_by_username(user)
            if record is None:
                raise fail(f"no user {user!r}")
            user_id = record.id
        usernames = {u.id: u.username for u in admin.server.store.users()}
        now = int(datetime.now(UTC).timestamp())
        sessions = [describe(s, usernames, now) for s in admin.sessions(user_id)]
    if not all_:
        sessions = [s for s in sessions if s["active"]]
    columns = [
        ("Session ID", field("id")),
        ("User", lambda s: s["username"] or s["user_id"]),
        ("Client", field("client_id")),
        ("Scope", field("scope")),
        ("Started", field("created_at")),
        ("Expires", field("expires_at")),
        ("State", state),
    ]
    show("sessions", sessions, columns, as_json=as_json, empty="no sessions")


@app.command("revoke")
def revoke(session_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """End a session: its refresh token and the access tokens issued from it stop working at once."""
    with administration(data_dir, database_url) as admin:
        revoked = admin.revoke_session(session_id)
    typer.echo(f"Revoked session {session_id}" if revoked else f"Session {session_id} was already revoked")
