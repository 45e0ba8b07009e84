"""``chit token inspect``, ``chit token attenuate``, ``chit token verify``.

``attenuate`` and ``verify`` work offline on chits signed by this installation's root keys (the key
files in the data directory): the first narrows a chit as a service would before calling the next
(``chit.attenuate``), the second decides it as a service's verifier would (``ChitAuthorizer``), with
the service, operations and request facts given on the command line."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, emit, fail, open_server
from chit.core import biscuit
from chit.core.chit_authorizer import ChitAuthorizer, RootKeys, is_chit
from chit.core.chit_blocks import MalformedChitError, read_blocks
from chit.core.jwt import decode_unverified
from chit.errors import InvalidTokenError
from chit.sdk.chits import attenuate as attenuate_chit

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
            described = _chit_description(token, server.keys().biscuit_public_keys_by_id)
            if described is None:
                raise fail("not a JWT, and not a chit signed by this server's root keys")
            emit(described, as_json, _chit_text)
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
    data: dict[str, Any] = {
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


# --- chits ------------------------------------------------------------------------------------------

CHECK_PREFIXES = ("check if ", "check all ", "reject if ")


def _checks(source: str) -> list[str]:
    """The checks of a block as the binding prints them, one a line (for people: decisions read facts)."""
    return [line.strip().rstrip(";") for line in source.splitlines() if line.strip().startswith(CHECK_PREFIXES)]


def _chit_description(token: str, keys_by_id: dict[int, str]) -> dict[str, Any] | None:
    """What ``chit token inspect`` shows of a chit verified by one of ``keys_by_id``, or None."""
    try:
        parsed = biscuit.parse_chit(token, keys_by_id)
    except InvalidTokenError:
        return None
    revocation_ids = [str(r) for r in parsed.revocation_ids]
    blocks: list[dict[str, Any]] = []
    for index in range(parsed.block_count()):
        source = str(parsed.block_source(index))
        signer = parsed.block_external_key(index) if index > 0 else None
        blocks.append(
            {
                "index": index,
                "kind": "authority" if index == 0 else ("third-party" if signer else "attenuation"),
                "source": source,
                "checks": _checks(source),
                "signer": None if signer is None else str(signer),
                "revocation_id": revocation_ids[index] if index < len(revocation_ids) else None,
            }
        )
    return {
        "kind": "chit",
        "signature": "valid",
        "root_key_id": biscuit.root_key_id(token),
        "revocation_ids": revocation_ids,
        "blocks": blocks,
    }


def _chit_text(d: dict[str, Any]) -> str:
    key_id = d["root_key_id"]
    lines = [f"chit signed by root key {key_id if key_id is not None else '(no id)'}; signature: {d['signature']}"]
    for block in d["blocks"]:
        title = f"block {block['index']} ({block['kind']}"
        title += f", signed by {block['signer']})" if block["signer"] else ")"
        lines.append(title + ":")
        lines.append(f"  revocation id: {block['revocation_id']}")
        lines.extend(f"  {line}" for line in block["source"].splitlines() if line.strip())
        lines.append(f"  checks: {len(block['checks'])}")
    return "\n".join(lines)


def _known_root_key(token: str, keys_by_id: dict[int, str]) -> None:
    """Refuse (exit 1) a token that is not a chit, or a chit naming a root key this installation lacks."""
    if not is_chit(token):
        raise fail("not a chit (a Biscuit token in base64url)")
    key_id = biscuit.root_key_id(token)
    if key_id is None and biscuit.describe(token, keys_by_id) is None:
        raise fail("not a chit, or not one signed by a root key of this installation")
    if key_id is not None and key_id not in keys_by_id:
        raise fail(f"the chit names root key {key_id}, which this installation does not hold")


@app.command("attenuate")
def attenuate(
    token: Annotated[str, typer.Argument(help="A chit signed by this installation's root keys.")],
    service: Annotated[
        list[str] | None, typer.Option("--service", help="Only for this service (repeat: any of them).")
    ] = None,
    operation: Annotated[
        list[str] | None,
        typer.Option("--operation", help="Only these operations (permissions), and the services they name."),
    ] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="Only for this resource id.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="Only for requests with this HTTP method.")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only for requests to this path (a final '*': a prefix).")
    ] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Expire after this many seconds from now.")] = None,
    datalog: Annotated[
        str | None, typer.Option("--datalog", help="Checks to add, as datalog (bounded like any appended block).")
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the chit narrowed by one more block; every option only restricts. Offline: nothing is asked of
    the auth server. Exits 1 for a token that is not one of this installation's chits, nothing to restrict,
    or a restriction a verifier would refuse."""
    token = token.strip()
    with open_server(data_dir, database_url) as server:
        keys_by_id = server.keys().biscuit_public_keys_by_id
        now = server.now()
    _known_root_key(token, keys_by_id)
    try:
        attenuated = attenuate_chit(
            token,
            operations=operation or None,
            service=service or None,
            resource=resource,
            method=method,
            path=path,
            ttl=ttl,
            datalog=datalog,
            public_keys=keys_by_id,
            now=now,
        )
    except ValueError as exc:
        raise fail(str(exc).splitlines()[0]) from None
    described = _chit_description(attenuated, keys_by_id)
    assert described is not None  # just signed by a key of this installation's
    data = {"token": attenuated, "blocks": len(described["blocks"]), "revocation_ids": described["revocation_ids"]}
    emit(data, as_json, lambda d: str(d["token"]))


def _issuer_named(token: str) -> str | None:
    """The issuer a chit's authority block names, read before any signature check (the verifier then
    refuses the chit unless a root key of this installation signed that very block)."""
    try:
        padded = token.rstrip("=") + "=" * (-len(token.rstrip("=")) % 4)
        blocks = read_blocks(base64.urlsafe_b64decode(padded))
    except (MalformedChitError, ValueError, binascii.Error):
        return None
    named = [fact.terms[0] for fact in blocks[0].facts if fact.name == "issuer" and len(fact.terms) == 1]
    return named[0] if len(named) == 1 and isinstance(named[0], str) else None


@app.command("verify")
def verify(
    token: Annotated[str, typer.Argument(help="A chit signed by this installation's root keys.")],
    service: Annotated[str, typer.Option("--service", help="The service deciding (its id).")],
    operation: Annotated[
        list[str] | None, typer.Option("--operation", help="A permission the request requires (repeatable).")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="The request's HTTP method.")] = None,
    path: Annotated[str | None, typer.Option("--path", help="The request's path.")] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="The resource the request acts on.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="The owner of that resource.")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Decide a chit as the service's verifier would, and say why: exit 0 allowed, 1 refused (a failed
    check, or an invalid chit: forged, expired, over a limit, for another service). Revocation is not
    consulted."""
    token = token.strip()
    with open_server(data_dir, database_url) as server:
        keys_by_id = server.keys().biscuit_public_keys_by_id
        now = server.now()
        default_issuer = server.settings.issuer
    if not is_chit(token):
        raise fail("not a chit (a Biscuit token in base64url)")
    issuer = _issuer_named(token) or default_issuer
    authorizer = ChitAuthorizer(issuer, service)
    operations = tuple(dict.fromkeys(operation or ()))
    reason: str | None
    subject: str | None = None
    try:
        chit = authorizer.read(token, RootKeys(keys_by_id).candidates, now)
        subject = chit.authority.subject
        reason = authorizer.evaluate(
            chit,
            now=now,
            operations=operations,
            method=None if method is None else method.upper(),
            path=path,
            resource=resource,
            owner=owner,
        ).refusal
    except InvalidTokenError as exc:
        reason = f"invalid chit: {exc.reason}"
    data = {
        "decision": "allowed" if reason is None else "refused",
        "reason": reason,
        "service": service,
        "operations": list(operations),
        "subject": subject,
    }

    def human(d: dict[str, Any]) -> str:
        if d["reason"] is None:
            return f"allowed: {d['subject']} for {d['service']}" + (
                f" ({', '.join(d['operations'])})" if d["operations"] else ""
            )
        return f"refused: {d['reason']}"

    emit(data, as_json, human)
    if reason is not None:
        raise fail(f"refused: {reason}")
