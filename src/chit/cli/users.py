"""``chit user add`` / ``list`` / ``disable`` / ``enable`` / ``logout-everywhere``."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit, fail
from chit.cli.tables import field, show, when
from chit.policy.usernames import USERNAME_RULE, is_valid_username
from chit.server.credentials import check_new_password

app = typer.Typer(help="Manage users.", no_args_is_help=True)


def check_username(value: str) -> str:
    """The admin API's rule (ASCII only): anything else is a usage error, before any work is done."""
    if not is_valid_username(value):
        raise typer.BadParameter(USERNAME_RULE)
    return value


@app.command("add")
def add(
    username: Annotated[str, typer.Argument(callback=check_username)],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    role: Annotated[list[str] | None, typer.Option("--role", help="Grant this role (repeatable).")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user. Without --password-stdin a password is generated and printed once."""
    generated = not password_stdin
    password = secrets.token_urlsafe(18) if generated else sys.stdin.readline().rstrip("\r\n")
    problem = check_new_password(password)
    if problem:
        raise fail(problem)
    with administration(data_dir, database_url) as admin:
        user = admin.create_user(username, password, roles=sorted(set(role or ())))
    data = {"id": user.id, "username": user.username, "roles": sorted(set(role or ()))}
    if generated:
        data["password"] = password
    emit(
        data,
        as_json,
        lambda d: (
            f"Created user {d['username']} ({d['id']})"
            + (f"\npassword: {d['password']}\n(shown once)" if generated else "")
        ),
    )


@app.command("list")
def list_users(as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List users with their roles (never their passwords)."""
    with administration(data_dir, database_url) as admin:
        users = [
            {
                "id": u.id,
                "username": u.username,
                "disabled": u.disabled,
                "roles": admin.server.store.roles_of(u.id),
                "created_at": when(u.created_at),
            }
            for u in admin.users()
        ]
    columns = [
        ("Username", field("username")),
        ("ID", field("id")),
        ("Roles", field("roles")),
        ("Disabled", field("disabled")),
        ("Created", field("created_at")),
    ]
    show("users", users, columns, as_json=as_json, empty="no users")


@app.command("disable")
def disable(username: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Disable a user: logins, refreshes and introspection of their tokens fail from now on."""
    with administration(data_dir, database_url) as admin:
        admin.set_user_disabled(username, True)
    typer.echo(f"Disabled user {username}")


@app.command("enable")
def enable(username: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Enable a disabled user again."""
    with administration(data_dir, database_url) as admin:
        admin.set_user_disabled(username, False)
    typer.echo(f"Enabled user {username}")


@app.command("logout-everywhere")
def logout_everywhere(
    username: str, as_json: JsonFlag = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """Log a user out everywhere, leaving the account enabled: every token, session, API key and
    deferred delegation issued to them until now stops working, here and (through the revocation feed)
    in every service. Their next login works as usual."""
    with administration(data_dir, database_url) as admin:
        user, sessions = admin.logout_everywhere(username)
    emit(
        {"user": user.username, "user_id": user.id, "sessions_revoked": sessions},
        as_json,
        lambda d: f"Logged out {d['user']} everywhere: {len(d['sessions_revoked'])} session(s) revoked",
    )
