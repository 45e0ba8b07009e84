"""The ``chit`` command (DESIGN §4 CLI contract)."""

from __future__ import annotations

from typing import Annotated

import typer
from typer import core as typer_core

import chit
from chit.cli import (
    admins,
    apikeys,
    audit,
    clients,
    delegations,
    demo,
    init,
    keys,
    revocations,
    roles,
    serve,
    services,
    sessions,
    tokens,
    users,
)


def _no_type_column(self: typer_core.TyperArgument | typer_core.TyperOption, ctx: object) -> str | None:
    """Help shows what an option means, not its Python type (``<bool>``, ``<list[str]>``): only a metavar
    a command chose. Without rich, click's plain help needs a word after an option that takes a value."""
    if self.metavar is not None or typer_core.HAS_RICH:
        return self.metavar
    return (self.name or "value").upper()


def _usage_name(self: typer_core.TyperArgument) -> str:
    """``USERNAME`` (``[NAME]`` when optional) in usage lines, as DESIGN §4 writes them."""
    name = (self.metavar or self.name or "").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


typer_core.TyperArgument.display_type_rich = _no_type_column  # type: ignore[method-assign,assignment]
typer_core.TyperOption.display_type_rich = _no_type_column  # type: ignore[method-assign]
typer_core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]

HELP = """chit: authorization for Python microservices.

Every command takes --data-dir DIR and --database-url URL after its own arguments and exits 0 on
success, 1 when the operation is refused (with a one-line reason) and 2 on a usage error. Lists print
a table in a terminal and JSON with --json."""

app = typer.Typer(
    name="chit",
    help=HELP,
    no_args_is_help=False,
    invoke_without_command=True,
    rich_markup_mode="markdown",  # paragraphs flow: a docstring's line breaks do not break sentences
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_help_when_bare(ctx: typer.Context) -> None:
    """``chit`` or ``chit user`` alone: the help, exit 0 (click's no_args_is_help exits 2)."""
    if ctx.invoked_subcommand is None:
        text = ctx.get_help()  # rich prints the help itself and returns ""
        if text:
            typer.echo(text)
        raise typer.Exit(0)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"chit {chit.__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print chit's version and exit."),
    ] = False,
) -> None:
    _show_help_when_bare(ctx)


def add_group(sub: typer.Typer, name: str) -> None:
    """Register a group of commands; alone (``chit user``) it prints its help and exits 0."""
    sub.info.no_args_is_help = False
    sub.info.invoke_without_command = True
    sub.rich_markup_mode = "markdown"
    if sub.registered_callback is None:
        sub.callback()(_show_help_when_bare)
    app.add_typer(sub, name=name)


app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("init")(init.init)
add_group(users.app, "user")
add_group(clients.app, "client")
add_group(roles.app, "role")
app.command("grant")(roles.grant)
app.command("revoke-grant")(roles.revoke_grant)
add_group(services.app, "service")
add_group(admins.app, "admin")
add_group(apikeys.app, "api-key")
add_group(sessions.app, "session")
add_group(delegations.app, "delegation")
add_group(audit.app, "audit")
add_group(revocations.app, "revocations")
add_group(keys.app, "keys")
add_group(tokens.app, "token")


def main() -> None:
    app()
