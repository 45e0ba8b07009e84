"""``chit token inspect``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, emit, fail, open_server
from chit.core import biscuit
from chit.core.jwt import decode_unverified
from chit.errors import InvalidTokenError

app = typer.Typer(help="Look at tokens.", no_args_is_help=True)


def _shown(value: Any) -> str:
    """A claim as a person reads it: strings bare, anything else as JSON (never a Python repr)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _when(ts: Any) -> str:
    if not isinstance(ts, int):
        return "not a timestamp"
    return datetime.fromtimestamp(ts, UTC).isoformat()


@app.command("inspect")
def inspect(
    token: Annotated[str, typer.Argument(help="An access token (JWT) or a chit.")],
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a token's claims or blocks, whether its signature holds, and whether it has expired.
    Exits 1 when the signature does not hold (or the token is not one of this server's)."""
    token = token.strip()
    with open_server(data_dir, database_url) as server:
        now = server.now()
        if token.count(".") != 2:
            blocks = biscuit.describe(token, list(server.keys().biscuit_public_keys))
            if blocks is None:
                raise fail("not a JWT, and not a chit signed by this server's root keys")
            data: dict[str, Any] = {"kind": "chit", "signature": "valid", "blocks": blocks}
            emit(data, as_json, lambda d: "\n".join(f"block {i}:\n{b}" for i, b in enumerate(d["blocks"])))
            return
        try:
            header, claims = decode_unverified(token)
        except InvalidTokenError as exc:
            raise fail(exc.reason) from None
        try:
            # the CLI does not know the URL the server runs under: the keys decide, iss is shown
            iss = claims.get("iss") if isinstance(claims.get("iss"), str) else None
            checked = server.decode_own_access_token(token, verify_exp=False, issuer=iss)
            signature, active = "valid", server.access_token_is_active(checked)
        except InvalidTokenError as exc:
            signature, active = f"invalid: {exc.reason}", False
        exp = claims.get("exp")
        expired = not isinstance(exp, int) or exp <= now
    data = {
        "kind": "jwt",
        "header": header,
        "claims": claims,
        "signature": signature,
        "expired": expired,
        "revoked": signature == "valid" and not active,
    }

    def human(d: dict[str, Any]) -> str:
        lines = [f"header: {_shown(d['header'])}"]
        for name, value in d["claims"].items():
            shown = f"{_shown(value)} ({_when(value)})" if name in ("exp", "iat", "nbf") else _shown(value)
            lines.append(f"{name}: {shown}")
        lines.append(f"signature: {d['signature']}")
        if isinstance(exp, int):
            lines.append(f"expired {now - exp} s ago" if expired else f"expires in {exp - now} s")
        if d["revoked"]:
            lines.append("revoked (or its subject, client or session is)")
        return "\n".join(lines)

    emit(data, as_json, human)
    if signature != "valid":
        raise fail(f"the token's signature is {signature} (not a token of this server's, or altered)")
