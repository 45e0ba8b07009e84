"""``chit revocations tail``: the revocation feed (DESIGN §4, "Revocation feed") as the database holds it.

The database is the truth, so an operator reads the events where the CLI runs, without a token and
whether or not a server runs: what every service is told, in the order they are told. ``--follow``
polls the table for what any process (a server, its workers, another command) commits next.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from chit.cli.common import DatabaseUrl, DataDir, JsonFlag, open_server
from chit.errors import DatabaseBusyError
from chit.storage.base import Storage
from chit.storage.records import RevocationEvent

app = typer.Typer(help="Read the revocation feed.", no_args_is_help=True)

POLL_SECONDS = 0.2  # how soon --follow prints an event another process committed
PAGE = 1000  # the most events one read returns while following
EVERY_EVENT = 0  # ``now`` that leaves no stored event out: an operator sees expired ones too


def newest(store: Storage, count: int) -> tuple[list[RevocationEvent], int]:
    """The newest ``count`` events, oldest first, and the cursor after them (the last id when read:
    what commits later is newer than every event returned). Ids leave gaps (pruned events, a
    rolled-back transaction's id on PostgreSQL), so the window reaches back until it holds enough."""
    last = store.last_revocation_event_id()
    span = count
    while True:
        after = max(0, last - span)
        # at most ``span`` ids lie in (after, last]; what committed since is left to the follower
        events = [e for e in store.revocation_events(after, limit=span, now=EVERY_EVENT) if e.id <= last]
        if len(events) >= count or after == 0:
            return events[-count:], last
        span *= 4


def line(event: RevocationEvent, as_json: bool) -> str:
    if as_json:
        return json.dumps(event.wire(), sort_keys=True)
    not_before = "-" if event.not_before is None else iso(event.not_before)
    return f"{event.id} {event.kind} {event.value} not_before={not_before} expires={iso(event.expires)}"


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def show(events: list[RevocationEvent], as_json: bool) -> None:
    for event in events:
        sys.stdout.write(line(event, as_json) + "\n")
    sys.stdout.flush()  # a pipe buffers: whoever reads --follow must see each event as it commits


@app.command("tail")
def tail(
    after: Annotated[
        int | None,
        typer.Option("--after", min=0, help="Start after this event id (0: from the oldest kept)."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events as they commit, until interrupted.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, max=PAGE, help="Without --after, start at the newest N; without --follow, print N."
        ),
    ] = 20,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the revocation feed's events, oldest first: id, kind, value, not_before and expires (ISO
    times), or one JSON object a line with --json, as services receive them."""
    try:
        with open_server(data_dir, database_url) as server:
            store = server.store
            if after is None:
                events, cursor = newest(store, limit)
            else:
                events = store.revocation_events(after, limit=limit, now=EVERY_EVENT)
                cursor = events[-1].id if events else after
            show(events, as_json)
            while follow:
                try:
                    events = store.revocation_events(cursor, limit=PAGE, now=EVERY_EVENT)
                except DatabaseBusyError:
                    events = []  # a writer holds the database: read on the next round
                if events:
                    show(events, as_json)
                    cursor = events[-1].id
                if len(events) < PAGE:
                    time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None  # Ctrl-C is how --follow ends: not a failure
