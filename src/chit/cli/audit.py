"""``chit audit tail`` and ``chit audit verify``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, emit, fail, open_server
from chit.server.audit import verify_chain
from chit.storage.records import AuditRecord

app = typer.Typer(help="Read and check the audit log.", no_args_is_help=True)

HEAD_HASH = re.compile(r"[0-9a-f]{64}\Z")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def event_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "id": record.id,
        "time": datetime.fromtimestamp(record.time / 1_000_000, UTC).isoformat(),
        "type": record.type,
        "outcome": record.outcome,
        "request_id": record.request_id,
        "client_id": record.client_id,
        "subject": record.subject,
        "actors": json.loads(record.actors),
        "token_id": record.token_id,
        "source": record.source,
        "detail": json.loads(record.detail),
        "hash": record.hash,
    }


@app.command("tail")
def tail(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="How many events.")] = 20,
    type_: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Only events about this subject id.")] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the newest events, oldest first."""
    filters = {k: v for k, v in {"type": type_, "subject": subject}.items() if v is not None}
    with open_server(data_dir, database_url) as server:
        records = server.store.audit_events(limit=limit, newest_first=True, filters=filters)
    events = [event_dict(r) for r in reversed(records)]

    def human(d: dict[str, Any]) -> str:
        return "\n".join(
            f"{e['time']} {e['type']} {e['outcome']} subject={e['subject']} client={e['client_id']}"
            f" actors={','.join(e['actors']) or '-'} token={e['token_id']} source={e['source']}"
            + (f" {json.dumps(e['detail'], sort_keys=True)}" if e["detail"] else "")
            for e in d["events"]
        )

    emit({"events": events}, as_json, human)


@app.command("verify")
def verify(
    anchor: Annotated[
        list[str] | None,
        typer.Option("--anchor", help="A head hash printed by an earlier verify, which must still be there."),
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check the hash chain: exit 1 if any event was edited or deleted. Keep the printed head hash
    somewhere else; passing it back with --anchor later also catches deletion of the newest events."""
    for given in anchor or ():
        if not HEAD_HASH.match(given):
            # a typo is not tampering: only a well-formed hash missing from the chain is
            typer.echo(
                f"chit: --anchor {given!r} is not a head hash: expected the 64 lowercase hex characters"
                " that chit audit verify printed",
                err=True,
            )
            raise typer.Exit(2)
    with open_server(data_dir, database_url) as server:
        report = verify_chain(server.store.iter_audit(), anchor or ())
    data = {
        "events": report.events,
        "intact": report.intact,
        "problems": report.problems,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
    }
    if not report.intact:
        for problem in report.problems:
            typer.echo(problem, err=True)
        found = f"{plural(len(report.problems), 'problem')} in {plural(report.events, 'event')}"
        raise fail(f"the audit log was tampered with: {found}")
    emit(
        data,
        as_json,
        lambda d: (
            f"The audit log is intact: {plural(d['events'], 'event')}\n"
            f"head: event {d['head_seq']}, hash {d['head_hash']}"
        ),
    )
