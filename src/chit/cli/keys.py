"""``chit keys rotate``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, administration, emit
from chit.core.keys import check_algorithm
from chit.errors import ConfigurationError

app = typer.Typer(help="Manage signing keys and chit root keys.", no_args_is_help=True)


def check_alg(value: str | None) -> str | None:
    """An unknown algorithm is a usage error (exit 2), refused before the data directory is touched."""
    if value is not None:
        try:
            check_algorithm(value)
        except ConfigurationError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


@app.command("rotate")
def rotate(
    now: Annotated[bool, typer.Option("--now", help="Sign with the new key at once (key compromise).")] = False,
    alg: Annotated[
        str | None,
        typer.Option("--alg", callback=check_alg, help="RS256, ES256 or EdDSA (default: the current key's)."),
    ] = None,
    revoke_old: Annotated[
        bool,
        typer.Option(
            "--revoke-old",
            help="With --now: retire every earlier key at once; what they signed is refused here and by every service.",
        ),
    ] = False,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Publish a new signing key now; it signs once caches of the JWKS hold it (max-age), or at once
    with --now. A new chit root key is published too and mints at once (chits name their root key id).
    Old keys stay published until every token they signed has expired, unless --revoke-old retires
    them now (a key compromise): the revocation feed tells every service to refuse their tokens."""
    if revoke_old and not now:
        # checked before the data directory is touched: the old keys must not be revoked while they still sign
        raise typer.BadParameter("it takes --now: the old key signs until the new one does", param_hint="--revoke-old")
    with administration(data_dir, database_url) as admin:
        data = admin.rotate_keys(alg, now, revoke_old=revoke_old)
    emit(data, as_json, described)


def described(data: dict[str, Any]) -> str:
    lines = [
        f"Published key {data['kid']} ({data['alg']}); it signs from {data['signs_from']}",
        f"Published chit root key {data['biscuit_root_key_id']} ({data['biscuit_public_key']}); it mints now",
    ]
    if "revoked" in data:
        lines.append(f"Revoked {', '.join(data['revoked'])}: their tokens are refused from now on")
    return "\n".join(lines)
