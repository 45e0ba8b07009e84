"""The ``chit`` command (DESIGN §4 CLI contract)."""

from __future__ import annotations

import typer

from chit.cli import admins, apikeys, audit, clients, keys, roles, serve, services, tokens, users

app = typer.Typer(
    name="chit",
    help="chit: authorization for Python microservices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.add_typer(users.app, name="user")
app.add_typer(clients.app, name="client")
app.add_typer(roles.app, name="role")
app.command("grant")(roles.grant)
app.command("revoke-grant")(roles.revoke_grant)
app.add_typer(services.app, name="service")
app.add_typer(admins.app, name="admin")
app.add_typer(apikeys.app, name="api-key")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(tokens.app, name="token")


def main() -> None:
    app()
