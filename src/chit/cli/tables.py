"""Lists for people: a ``rich`` table in a terminal, aligned plain columns otherwise (scripts use ``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]  # heading, how to read the cell from a row


def when(ts: int | None) -> str | None:
    """A stored time (seconds since the epoch) as ISO 8601 UTC, for JSON and tables."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(name)


def show(
    key: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
    empty: str = "nothing to list",
) -> None:
    """Print ``rows`` as ``{key: rows}`` JSON, or as a table with ``columns``."""
    if as_json:
        sys.stdout.write(json.dumps({key: list(rows)}, indent=2, sort_keys=True) + "\n")
        return
    console = Console()
    if not rows:
        console.print(f"({empty})", highlight=False, markup=False)
        return
    cells = [[cell(read(row)) for _, read in columns] for row in rows]
    if console.is_terminal:
        table = Table(title=title, header_style="bold", title_justify="left")
        for heading, _ in columns:
            table.add_column(heading, overflow="fold")
        for line in cells:
            table.add_row(*line)
        console.print(table, highlight=False)
    else:
        sys.stdout.write(plain([h for h, _ in columns], cells))


def plain(headings: Sequence[str], cells: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, one row a line (never wrapped)."""
    table = [list(headings), *[list(c) for c in cells]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headings))]
    return "".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() + "\n" for row in table
    )
