"""Run every benchmark and print the table of its ratios against the speed targets (issue 19 and earlier).

Each benchmark runs as a subprocess of this interpreter, one after the other in a fixed order, with
options that keep the whole run at about 17 minutes on 2 CPUs, under 25 (``--quick``: about 6). Its stdout
(the Markdown tables it prints) is saved to ``DIR/<name>.md``, its stderr to ``DIR/<name>.log``, and
how it ran to ``DIR/<name>.json``; the tables are then parsed, and the measured value of every target
goes into one table: target | measured | bound | met | source. A value that cannot be read (the
benchmark failed, was skipped, or its table changed) is shown as "not measured" with the reason.

    .venv/bin/python bench/run_all.py                      # every benchmark, about 17 minutes
    .venv/bin/python bench/run_all.py --only verification chits --quick
    .venv/bin/python bench/run_all.py --from-dir /tmp/chit-bench-run-all-x   # parse saved outputs again
    .venv/bin/python bench/run_all.py --write              # also adds a dated section to RESULTS.md

The exit status is 0 when every selected benchmark ran and every target could be read, 1 otherwise;
targets that are not met do not change it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from issuance import stop_on_sigterm

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
TIMES = "\u00d7"
REDIS = ("127.0.0.1", 6379)


# --- the benchmarks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    name: str  # the script is bench/<name>.py
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    minutes: float  # expected run time with args, for the progress line
    quick_minutes: float
    timeout_minutes: float  # stopped (SIGTERM, then SIGKILL) after this

    @property
    def script(self) -> str:
        return f"bench/{self.name}.py"


# A fixed order: the in-process benchmarks first (a minute each at most), then the ones under wrk.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("verification", ("--repeats", "9"), ("--repeats", "5", "--seconds", "0.1"), 0.6, 0.2, 5),
    Benchmark("sdk_verify", ("--rounds", "9", "--batch", "1000"), ("--rounds", "5", "--batch", "300"), 0.7, 0.2, 5),
    Benchmark("chits", ("--rounds", "7", "--batch", "300"), ("--rounds", "3", "--batch", "200"), 1.0, 0.4, 6),
    Benchmark("sdk_dependency", ("--rounds", "9"), ("--rounds", "3", "--batch", "2000"), 0.3, 0.1, 5),
    Benchmark(
        "revocation_propagation",
        ("--revocations", "200", "--entries", "100000"),
        ("--revocations", "50", "--entries", "20000"),
        1.2,
        0.5,
        8,
    ),
    Benchmark(
        "exchange",
        ("--alg", "EdDSA", "--duration", "5", "--rounds", "4"),
        ("--alg", "EdDSA", "--duration", "4", "--rounds", "1", "--warmup", "1"),
        2.0,
        0.5,
        8,
    ),
    Benchmark("sdk_endpoint", ("--rounds", "5", "--duration", "4"), ("--rounds", "1", "--duration", "3"), 4.2, 1.0, 12),
    Benchmark(
        "logins",
        (),
        (
            *("--raw-threads", "1", "4", "--raw-seconds", "2", "--duration", "5", "--rounds", "1"),
            *("--cc-duration", "5", "--warmup", "1"),
        ),
        2.4,
        0.8,
        10,
    ),
    Benchmark(
        "issuance",
        ("--peer", "--algs", "EdDSA", "RS256", "--rounds", "2", "--duration", "8"),
        ("--peer", "--algs", "EdDSA", "RS256", "--rounds", "1", "--duration", "4", "--warmup", "1"),
        4.5,
        1.8,
        15,
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


# --- Markdown tables ---------------------------------------------------------------------------------

SEPARATOR_CELL = re.compile(r"^:?-{3,}:?$")
NUMBER = re.compile(r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
QUANTITY = re.compile(NUMBER.pattern + r"\s*(" + TIMES + r"|µs|ms|s|%)?")


def numbers(cell: str) -> list[float]:
    """Every number in a cell, in order: thousands separators dropped ("1,225" is 1225), signs kept."""
    text = cell.replace("**", "").replace("`", "")
    return [float(m.group().replace(",", "").replace("\u2212", "-")) for m in NUMBER.finditer(text)]


def number(cell: str) -> float | None:
    """The first number in a cell ("0.96x (1.21x)" with the sign is 0.96, "+37" is 37, "(shared)" is None)."""
    found = numbers(cell)
    return found[0] if found else None


def quantity(cell: str) -> tuple[float, str] | None:
    """The first number in a cell and the unit right after it (the ratio sign, "µs", "ms", "s" or "%"), or None."""
    match = QUANTITY.search(cell.replace("**", "").replace("`", ""))
    if match is None:
        return None
    value = float(match.group().removesuffix(match.group(1) or "").strip().replace(",", "").replace("\u2212", "-"))
    return value, match.group(1) or ""


def split_row(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return [cell.strip() for cell in body.split("|")]


@dataclass
class Table:
    """One Markdown table: its header cells, its rows, the nearest heading above it and the text around it."""

    headers: list[str]
    rows: list[list[str]]
    heading: str = ""
    before: str = ""  # text lines between the heading and the table
    after: str = ""  # text lines after the table, up to the next table or heading

    def unique_headers(self) -> list[str]:
        """The headers made unique: an empty one is "column N", a repeated one gets " (2)", " (3)"."""
        seen: dict[str, int] = {}
        keys = []
        for index, header in enumerate(self.headers, 1):
            key = header or f"column {index}"
            seen[key] = seen.get(key, 0) + 1
            keys.append(key if seen[key] == 1 else f"{key} ({seen[key]})")
        return keys

    def dicts(self) -> list[dict[str, str]]:
        """Header row → one dict per row (missing trailing cells are empty strings)."""
        keys = self.unique_headers()
        return [dict(zip(keys, row + [""] * (len(keys) - len(row)), strict=False)) for row in self.rows]

    def column(self, *names: str, last: bool = False) -> int:
        """The index of the first (or last) header that equals one of names, else that contains one."""
        plain = [h.replace("`", "").lower() for h in self.headers]
        wanted = [n.replace("`", "").lower() for n in names]
        for test in (lambda h, n: h == n, lambda h, n: n in h):
            found = [i for i, h in enumerate(plain) if any(test(h, n) for n in wanted)]
            if found:
                return found[-1] if last else found[0]
        raise Missing(f"no column {' or '.join(repr(n) for n in names)} in the table {self.headers[:3]}…")

    def row(self, test: Callable[[str], bool], description: str) -> list[str]:
        """The first row whose first cell (backticks and bold removed) passes test."""
        for row in self.rows:
            if row and test(label(row[0])):
                return row
        raise Missing(f"no row {description} in the table `| {' | '.join(self.headers[:2])} |…`")

    def value(self, row: list[str], column: int) -> float:
        cell = row[column] if column < len(row) else ""
        found = number(cell)
        if found is None:
            raise Missing(f"no number in {self.headers[column]!r} of the row {label(row[0])!r}: {cell!r}")
        return found


def label(cell: str) -> str:
    return cell.replace("`", "").replace("**", "").strip()


def parse_tables(text: str) -> list[Table]:
    """Every Markdown table in text: a run of lines starting with "|" whose second line is |---|---:|…"""
    lines = text.splitlines()
    tables: list[Table] = []
    heading, prose = "", list[str]()
    after: Table | None = None  # the table whose "after" text is being read
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        is_table = (
            line.startswith("|")
            and index + 1 < len(lines)
            and lines[index + 1].strip().startswith("|")
            and all(SEPARATOR_CELL.match(c.replace(" ", "")) for c in split_row(lines[index + 1]))
        )
        if is_table:
            end = index + 2
            while end < len(lines) and lines[end].strip().startswith("|"):
                end += 1
            rows = [split_row(x) for x in lines[index + 2 : end]]
            after = Table(split_row(line), rows, heading, "\n".join(prose).strip())
            tables.append(after)
            prose = []
            index = end
            continue
        if line.startswith("#"):
            heading, prose, after = line.lstrip("#").strip(), [], None
        else:
            prose.append(lines[index])
            if after is not None:
                after.after += lines[index] + "\n"
        index += 1
    return tables


# --- outputs and targets -----------------------------------------------------------------------------


class Missing(Exception):
    """A value a target needs is not in the output (the benchmark failed or its table changed)."""


class NotRun(Missing):
    """The benchmark ran but left this part out on purpose (no Redis, no peer): not a changed table."""


@dataclass
class Output:
    """What one benchmark printed, and how it ran."""

    name: str
    text: str = ""
    returncode: int | None = None
    seconds: float | None = None
    command: str = ""
    problem: str = ""  # why there is no usable output (failed, skipped, not found)
    note: str = ""  # something a reader should know (a backend or a peer left out)
    tables: list[Table] = field(default_factory=list)

    def table(self, test: Callable[[Table], bool], description: str) -> Table:
        for table in self.tables:
            if test(table):
                return table
        raise Missing(f"no {description} table in the output")


@dataclass(frozen=True)
class Measured:
    value: float
    detail: str = ""  # shown after the value, in brackets
    shown: str = ""  # replaces the formatted value
    met: bool | None = None  # decided by the measure itself (not by comparing value with the bound)


@dataclass(frozen=True)
class Spec:
    source: str  # benchmark name
    name: str
    unit: str  # TIMES, "ms", "µs" or "" (Measured.shown then says it)
    op: str  # "<=", ">=", "<", or "" (reported, no numeric target)
    bound: float | None
    measure: Callable[[Output], Measured]
    stretch: float | None = None
    bound_text: str = ""


@dataclass
class Outcome:
    spec: Spec
    measured: Measured | None = None
    reason: str = ""

    @property
    def met(self) -> str:
        spec, measured = self.spec, self.measured
        if measured is None:
            return "—"
        if measured.met is not None:
            return "yes" if measured.met else "no"
        if spec.bound is None or not spec.op:
            return "reported"
        if spec.stretch is not None and compare(measured.value, spec.op, spec.stretch):
            return "stretch met"
        return "yes" if compare(measured.value, spec.op, spec.bound) else "no"


def compare(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound}[op]


def fmt(value: float, unit: str) -> str:
    if unit == TIMES:
        return f"{value:.2f}{TIMES}"
    if unit == "µs":
        return f"{value:,.2f} µs"
    if unit == "ms":
        return f"{value:,.1f} ms"
    return f"{value:g}"


def bound_text(spec: Spec) -> str:
    if spec.bound_text:
        return spec.bound_text
    if spec.bound is None or not spec.op:
        return "no numeric target"
    symbol = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}[spec.op]

    def show(value: float) -> str:
        return fmt(value, spec.unit) if spec.unit == TIMES else f"{value:g} {spec.unit}".strip()

    text = f"{symbol} {show(spec.bound)}"
    if spec.stretch is not None:
        text += f" (stretch {symbol} {show(spec.stretch)})"
    return text


def ratio(a: float, b: float) -> float:
    if b == 0:
        raise Missing("division by zero (a rate or a CPU cost of 0)")
    return a / b


# --- issuance.py ---


def issuance_groups(out: Output) -> dict[int, Table]:
    groups: dict[int, Table] = {}
    for table in out.tables:
        match = re.search(r"(\d+) workers?", table.heading)
        if table.headers and label(table.headers[0]) == "server" and match:
            groups[int(match.group(1))] = table
    if not groups:
        raise Missing("no `| server | …` table under a `N worker(s)` heading")
    return groups


def issuance_group(out: Output, workers: int) -> Table:
    groups = issuance_groups(out)
    if workers not in groups:
        raise Missing(f"no {workers}-worker table (found: {', '.join(str(w) for w in sorted(groups))})")
    return groups[workers]


def is_peer(text: str) -> bool:
    return text.startswith("peer:")


def peer_row(table: Table) -> list[str]:
    try:
        return table.row(is_peer, "`peer: …`")
    except Missing:
        raise NotRun("no peer row (issuance.py ran without --peer, or the peer could not be installed)") from None


def issuance_cpu_vs_peer(out: Output) -> Measured:
    table = issuance_group(out, 1)
    cpu = table.column("server CPU µs per 2xx")
    chit = table.value(table.row(lambda x: x == "chit EdDSA", "`chit EdDSA`"), cpu)
    peer = table.value(peer_row(table), cpu)
    return Measured(ratio(chit, peer), f"{chit:,.0f} / {peer:,.0f} µs")


def issuance_rate_vs_peer(out: Output) -> Measured:
    table = issuance_group(out, 2)
    rate = table.column("2xx/s (median)", "2xx/s")
    chit = table.value(table.row(lambda x: x == "chit EdDSA", "`chit EdDSA`"), rate)
    peer = table.value(peer_row(table), rate)
    return Measured(ratio(chit, peer), f"{chit:,.0f} / {peer:,.0f} tokens/s")


def issuance_rs256_vs_eddsa(out: Output) -> Measured:
    per_group = {}
    for workers, table in sorted(issuance_groups(out).items()):
        cpu = table.column("server CPU µs per 2xx")
        rs = table.value(table.row(lambda x: x == "chit RS256", "`chit RS256`"), cpu)
        ed = table.value(table.row(lambda x: x == "chit EdDSA", "`chit EdDSA`"), cpu)
        per_group[workers] = ratio(rs, ed)
    worst = max(per_group, key=lambda w: per_group[w])
    detail = ", ".join(f"{w} worker{'s' if w > 1 else ''} {v:.2f}{TIMES}" for w, v in per_group.items())
    floors = re.findall(r"floor \*\*([\d.]+)" + TIMES, out.text)  # issuance.py's signing-alone floor, per group
    if floors:
        detail += f"; signing alone sets the floor at {', '.join(f + TIMES for f in floors)}"
    return Measured(per_group[worst], f"worst; {detail}")


def issuance_tail(out: Output) -> Measured:
    tails: dict[str, float] = {}
    for workers, table in sorted(issuance_groups(out).items()):
        p50, p99 = table.column("p50 ms"), table.column("p99 ms")
        for row in table.rows:
            if label(row[0]).startswith("chit"):
                tails[f"{label(row[0]).removeprefix('chit ')} {workers}w"] = ratio(
                    table.value(row, p99), table.value(row, p50)
                )
    if not tails:
        raise Missing("no `chit …` rows in the issuance tables")
    worst = max(tails, key=lambda k: tails[k])
    return Measured(tails[worst], f"worst, {worst}; " + ", ".join(f"{k} {v:.1f}" for k, v in tails.items()))


# --- exchange.py ---


def exchange_row(words: str) -> Callable[[Output], Measured]:
    def measure(out: Output) -> Measured:
        table = out.table(
            lambda t: any("client_credentials CPU" in h for h in t.headers), f"`{TIMES} client_credentials CPU`"
        )
        column = table.column("client_credentials CPU")
        row = table.row(lambda x: x.startswith("chit") and words in x, f"`chit …{words}…`")
        alg = re.search(r"one chit worker, (\w+)", table.before)
        return Measured(table.value(row, column), f"{alg.group(1)}" if alg else "")

    return measure


# --- sdk_endpoint.py ---


def endpoint_table(out: Output) -> Table:
    return out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "endpoint", "`| endpoint | …`")


def endpoint_vs_open(path: str) -> Callable[[Output], Measured]:
    def measure(out: Output) -> Measured:
        table = endpoint_table(out)
        column = table.column(f"{TIMES} /open")
        row = table.row(lambda x: x == path, f"`{path}`")
        rps = table.column("2xx/s (median)", "2xx/s")
        detail = f"{table.value(row, rps):,.0f} req/s"
        if path == "/chit":  # the ceiling FastAPI's own ``Security`` machinery leaves any dependency
            try:
                noop = table.value(table.row(lambda x: x == "/noop-security", "`/noop-security`"), column)
                detail += f"; FastAPI's `Security` around a do-nothing dependency {noop:.2f}{TIMES}"
            except Missing:
                pass
        return Measured(table.value(row, column), detail)

    return measure


def endpoint_nocache_vs_pyjwt(out: Output) -> Measured:
    table = endpoint_table(out)
    cpu = table.column("app CPU µs per request")
    chit = table.value(table.row(lambda x: x == "/chit-nocache", "`/chit-nocache`"), cpu)
    pyjwt = table.value(table.row(lambda x: x == "/pyjwt", "`/pyjwt`"), cpu)
    return Measured(ratio(chit, pyjwt), f"app CPU {chit:,.0f} / {pyjwt:,.0f} µs per request")


# --- sdk_dependency.py ---


def dependency_own_work(out: Output) -> Measured:
    table = out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "variant", "`| variant | …`")
    own = table.column("own µs")
    shipped = table.value(table.row(lambda x: x == "dependency", "`dependency`"), own)
    general = table.value(table.row(lambda x: x == "general path", "`general path`"), own)
    return Measured(shipped, f"{ratio(shipped, general):.2f}{TIMES} the general path's {general:.2f} µs")


# --- sdk_verify.py, verification.py ---


def worst_over_rows(table: Table, column: int, what: str) -> Measured:
    values = {label(row[0]): table.value(row, column) for row in table.rows}
    if not values:
        raise Missing(f"no rows in the {what} table")
    worst = max(values, key=lambda k: values[k])
    return Measured(values[worst], f"worst, {worst}; " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))


def sdk_verify_table(out: Output) -> Table:
    return out.table(lambda t: any("no cache" in h for h in t.headers), "`SDK verify+require, no cache`")


def sdk_verify_ratio(out: Output) -> Measured:
    table = sdk_verify_table(out)
    return worst_over_rows(table, table.column(f"{TIMES} PyJWT"), "sdk_verify")


def sdk_verify_cached(out: Output) -> Measured:
    table = sdk_verify_table(out)
    return worst_over_rows(table, table.column("SDK verify+require, cached µs", "cached"), "sdk_verify")


def verification_ratio(out: Output) -> Measured:
    table = out.table(lambda t: any("PyJWT" in h for h in t.headers) and label(t.headers[0]) == "alg", "verification")
    # The last "x PyJWT" column is the last chit variant's, the SDK's path (`AccessTokenDecoder`), as
    # verification.py's own verdict takes it.
    column = table.column(f"{TIMES} PyJWT", last=True)
    variant = label(table.headers[column - 1]).removesuffix(" µs") if column else "?"
    found = worst_over_rows(table, column, "verification")
    return Measured(found.value, f"`{variant}`, {found.detail}")


# --- chits.py ---


def chits_operation(prefix: str, unit: str) -> Callable[[Output], Measured]:
    def measure(out: Output) -> Measured:
        table = out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "operation", "`| operation | …`")
        row = table.row(lambda x: x.startswith(prefix), f"`{prefix} …`")
        if unit == TIMES:
            return Measured(table.value(row, table.column(f"{TIMES} raw")))
        return Measured(table.value(row, table.column("chit µs")))

    return measure


def chits_blocks(which: str) -> Callable[[Output], Measured]:
    """which: "cached" (µs), "not cached" (first ratio) or "cold" (the ratio in brackets)."""

    def measure(out: Output) -> Measured:
        table = out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "blocks", "`| blocks | …`")
        values: dict[str, float] = {}
        if which == "cached":
            column = table.column("SDK cached µs")
            values = {label(row[0]): table.value(row, column) for row in table.rows}
        else:
            column = table.column(f"{TIMES} raw")
            for row in table.rows:
                found = numbers(row[column]) if column < len(row) else []
                index = 1 if which == "cold" else 0
                if len(found) <= index:
                    raise Missing(f"no {which} ratio in {table.headers[column]!r}: {row[column]!r}")
                values[label(row[0])] = found[index]
        if not values:
            raise Missing("no rows in the blocks table")
        worst = max(values, key=lambda k: values[k])
        detail = ", ".join(f"{k}: {v:.2f}" for k, v in values.items())
        return Measured(values[worst], f"worst, {worst} block(s); {detail}")

    return measure


# --- revocation_propagation.py ---


def revocation_table(out: Output) -> Table:
    return out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "backend", "`| backend | …`")


def revocation_p99(backend: str) -> Callable[[Output], Measured]:
    def measure(out: Output) -> Measured:
        table = revocation_table(out)
        try:
            row = table.row(lambda x: x == backend, f"`{backend}`")
        except Missing:
            why = out.note or "the benchmark did not run that backend"
            raise NotRun(f"no `{backend}` row ({why})") from None
        p50 = table.value(row, table.column("p50 ms"))
        return Measured(table.value(row, table.column("p99 ms")), f"p50 {p50:.1f} ms")

    return measure


def revocation_check(out: Output) -> Measured:
    table = revocation_table(out)
    return worst_over_rows(table, table.column("revokes() µs"), "revocation")


# --- logins.py ---


def logins_ratio(out: Output) -> Measured:
    table = out.table(lambda t: bool(t.headers) and label(t.headers[0]) == "round", "`| round | …`")
    column = table.column(f"{TIMES} raw")
    values = [table.value(row, column) for row in table.rows]
    if not values:
        raise Missing("no rounds in the logins table")
    rounds = ", ".join(f"{v:.2f}" for v in values)
    return Measured(statistics.median(values), f"median of {len(values)} round(s): {rounds}")


OWASP = {"m": 19, "t": 2, "p": 1}  # Argon2id, m in MiB (issue 19: never below it)


def logins_owasp(out: Output) -> Measured:
    match = re.search(r"parameters[^:\n]*:\s*m=(\d+) MiB, t=(\d+), p=(\d+)", out.text)
    if match is None:
        raise Missing("no `Argon2id parameters …: m=… MiB, t=…, p=…` line")
    m, t, p = (int(g) for g in match.groups())
    ok = m >= OWASP["m"] and t >= OWASP["t"] and p >= OWASP["p"]
    return Measured(float(ok), shown=f"m={m} MiB, t={t}, p={p}", met=ok)


def logins_cc(out: Output) -> Measured:
    table = out.table(lambda t: bool(t.headers) and "same run" in label(t.headers[0]), "`| chit serve, same run | …`")
    rate = table.column("2xx/s")
    alone = table.value(table.row(lambda x: x == "client credentials alone", "`client credentials alone`"), rate)
    during = table.value(
        table.row(lambda x: x.startswith("client credentials, with logins"), "`client credentials, with logins`"),
        rate,
    )
    value = ratio(during, alone)
    stated = re.search(r"Client credentials during logins:[^(]*?\(target (?:at least )?([\d.]+)" + TIMES, out.text)
    detail = f"{during:,.0f} / {alone:,.0f} tokens/s"
    if stated is not None:
        return Measured(value, detail + f"; target {stated.group(1)}{TIMES}", met=value >= float(stated.group(1)))
    return Measured(value, detail)


SPECS: tuple[Spec, ...] = (
    Spec(
        "issuance",
        "Issuance (19): chit EdDSA server CPU per token ÷ oidc-provider's, 1 worker",
        TIMES,
        "<=",
        1.0,
        issuance_cpu_vs_peer,
        stretch=0.67,
    ),
    Spec(
        "issuance",
        "Issuance (19): two chit EdDSA workers' tokens/s ÷ the Node peer's",
        TIMES,
        ">=",
        1.0,
        issuance_rate_vs_peer,
    ),
    Spec(
        "issuance", "Issuance (19): chit RS256 CPU per token ÷ chit EdDSA's", TIMES, "<=", 1.5, issuance_rs256_vs_eddsa
    ),
    Spec("issuance", "Issuance (19): p99 ÷ p50 latency of chit's rows (wrk -c32)", TIMES, "<=", 4.0, issuance_tail),
    Spec(
        "exchange",
        "Delegation (15, 19): token exchange CPU ÷ client_credentials CPU",
        TIMES,
        "<=",
        1.5,
        exchange_row("token exchange"),
    ),
    Spec(
        "exchange",
        "Delegation (15): deferred delegation redemption CPU ÷ client_credentials CPU",
        TIMES,
        "<=",
        1.5,
        exchange_row("deferred"),
    ),
    Spec(
        "sdk_endpoint",
        "Protected endpoint (19): `/chit` req/s ÷ `/open`, repeated token",
        TIMES,
        ">=",
        0.85,
        endpoint_vs_open("/chit"),
    ),
    Spec(
        "sdk_endpoint",
        "Protected endpoint (19): the same with the `AuthError` handler line, ÷ its `/open`",
        TIMES,
        ">=",
        0.85,
        endpoint_vs_open("handler:/chit"),
    ),
    Spec(
        "sdk_endpoint",
        "Protected endpoint (19): uncached verification, `/chit-nocache` CPU ÷ `/pyjwt`",
        TIMES,
        "<=",
        1.0,
        endpoint_nocache_vs_pyjwt,
    ),
    Spec(
        "sdk_dependency",
        "Protected endpoint (19): the dependency's own work per call, a token seen before, in process",
        "µs",
        "",
        None,
        dependency_own_work,
        bound_text="reported (its share of the endpoint's cost)",
    ),
    Spec(
        "sdk_verify",
        f"SDK verify+require, no cache ÷ raw PyJWT (19: 1.0{TIMES}; 4: 1.10{TIMES})",
        TIMES,
        "<=",
        1.0,
        sdk_verify_ratio,
    ),
    Spec("sdk_verify", "SDK verify+require, cached token (4)", "µs", "<", 5.0, sdk_verify_cached),
    Spec("verification", "Verification: SDK decoder ÷ PyJWT `jwt.decode` (4)", TIMES, "<=", 1.10, verification_ratio),
    Spec("chits", "Chits (16): mint ÷ raw biscuit_auth", TIMES, "<=", 1.10, chits_operation("mint", TIMES)),
    Spec(
        "chits",
        "Chits (16): attenuate one hop ÷ raw biscuit_auth",
        TIMES,
        "<=",
        1.10,
        chits_operation("attenuate one hop", TIMES),
    ),
    Spec("chits", "Chits (16): attenuate one hop", "µs", "<", 150.0, chits_operation("attenuate one hop", "µs")),
    Spec(
        "chits",
        "Chits (16): attenuate a chit from its text (verify first) ÷ raw biscuit_auth",
        TIMES,
        "<=",
        1.10,
        chits_operation("attenuate a chit from its text", TIMES),
    ),
    Spec(
        "chits",
        "Chits (16): attenuate a chit from its text (verify first)",
        "µs",
        "",
        None,
        chits_operation("attenuate a chit from its text", "µs"),
        bound_text="reported (a hop attenuates the chit verified when its request came in)",
    ),
    Spec(
        "chits",
        "Chits (16): verify+authorize, token not cached ÷ raw biscuit_auth",
        TIMES,
        "<=",
        1.10,
        chits_blocks("not cached"),
    ),
    Spec(
        "chits",
        "Chits (16): the same, blocks not remembered either (cold) ÷ raw",
        TIMES,
        "<=",
        1.10,
        chits_blocks("cold"),
    ),
    Spec("chits", "Chits (16): verify+authorize, cached token", "µs", "<", 5.0, chits_blocks("cached")),
    Spec(
        "revocation_propagation",
        "Revocation (17): propagation p99, embedded feed",
        "ms",
        "<",
        1000.0,
        revocation_p99("embedded"),
    ),
    Spec(
        "revocation_propagation", "Revocation (17): propagation p99, Redis", "ms", "<", 100.0, revocation_p99("redis")
    ),
    Spec("revocation_propagation", "Revocation (17): the list's check per request", "µs", "<", 1.0, revocation_check),
    Spec("logins", "Password logins (19): login rate ÷ raw argon2 rate", TIMES, ">=", 0.9, logins_ratio),
    Spec(
        "logins",
        "Password logins (19): Argon2id parameters",
        "",
        ">=",
        1.0,
        logins_owasp,
        bound_text="not below OWASP's m=19 MiB, t=2, p=1",
    ),
    Spec(
        "logins",
        "Password logins (19): client credentials during logins ÷ alone",
        TIMES,
        "",
        None,
        logins_cc,
        bound_text="reported (not starved)",
    ),
)


def evaluate(outputs: dict[str, Output], names: Sequence[str]) -> list[Outcome]:
    """One outcome per target of the selected benchmarks; never raises for a missing or changed table."""
    outcomes = []
    for spec in SPECS:
        if spec.source not in names:
            continue
        out = outputs.get(spec.source)
        if out is None or out.problem:
            outcomes.append(Outcome(spec, reason=out.problem if out else "not run"))
            continue
        try:
            outcomes.append(Outcome(spec, spec.measure(out)))
        except NotRun as error:
            outcomes.append(Outcome(spec, reason=str(error)))
        except (Missing, IndexError, ValueError, KeyError) as error:
            outcomes.append(Outcome(spec, reason=f"table changed? {error}"))
    return outcomes


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def target_table(outcomes: Sequence[Outcome]) -> str:
    lines = ["| target | measured | bound | met | source |", "|---|---|---|---|---|"]
    for outcome in outcomes:
        spec, measured = outcome.spec, outcome.measured
        if measured is None:
            shown = f"not measured: {outcome.reason}"
        else:
            shown = f"**{measured.shown or fmt(measured.value, spec.unit)}**"
            if measured.detail:
                shown += f" ({measured.detail})"
        met = outcome.met
        met = f"**{met}**" if met == "no" else met
        lines.append(f"| {cell(spec.name)} | {cell(shown)} | {bound_text(spec)} | {met} | `{spec.source}.py` |")
    counts = {k: sum(1 for o in outcomes if o.met == k) for k in ("yes", "stretch met", "no", "—", "reported")}
    lines += [
        "",
        f"{counts['yes'] + counts['stretch met']} of {len(outcomes)} targets met ({counts['stretch met']} at the "
        f"stretch bound), {counts['no']} not met, {counts['—']} not measured, {counts['reported']} reported "
        "without a numeric target.",
    ]
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------------------------


def redis_answers() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(REDIS, timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")
    return False


def tail(text: str, lines: int = 3) -> str:
    kept = [x.strip() for x in text.strip().splitlines() if x.strip()][-lines:]
    return " / ".join(kept)[-400:]


def pump(stream: IO[str], sink: list[str], echo: IO[str] | None, prefix: str) -> None:
    for line in stream:
        sink.append(line)
        if echo is not None:
            echo.write(prefix + line)
            echo.flush()


def stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the benchmark started here and what it started (its own process group): SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # the benchmarks stop their servers on SIGTERM
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_benchmark(bench: Benchmark, quick: bool, save_dir: Path) -> Output:
    args = list(bench.quick_args if quick else bench.args)
    note = ""
    if bench.name == "revocation_propagation" and not redis_answers():
        args += ["--backends", "embedded"]
        note = "no Redis answered on 127.0.0.1:6379: only the embedded feed was measured"
    out = execute(bench, args, quick, save_dir, note)
    if bench.name == "issuance" and out.problem and "--peer" in args and re.search(r"npm|node", out.problem, re.I):
        print("issuance: the peer could not be run; running again without --peer", file=sys.stderr, flush=True)
        args.remove("--peer")
        out = execute(bench, args, quick, save_dir, f"peer left out ({out.problem})")
    return out


def execute(bench: Benchmark, args: list[str], quick: bool, save_dir: Path, note: str) -> Output:
    command = [sys.executable, bench.script, *args]
    shown = " ".join(["python", bench.script, *args])
    minutes = bench.quick_minutes if quick else bench.minutes
    print(f"== {shown} (about {minutes:.1f} min)", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    stdout: list[str] = []
    stderr: list[str] = []
    returncode: int | None = None
    problem = ""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stderr is not None
    readers = [
        threading.Thread(target=pump, args=(process.stdout, stdout, None, ""), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, stderr, sys.stderr, f"  [{bench.name}] "), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = process.wait(timeout=bench.timeout_minutes * 60)
    except subprocess.TimeoutExpired:
        stop_group(process)
        problem = f"stopped after {bench.timeout_minutes:g} min"
    finally:
        stop_group(process)  # also on Ctrl-C: never leave a benchmark's servers behind
        for reader in readers:
            reader.join(timeout=10)
    seconds = time.monotonic() - started
    text, errors = "".join(stdout), "".join(stderr)
    if not problem and returncode != 0:
        problem = f"{bench.script} exited with {returncode}: {tail(errors)}"
    elif not problem and not text.strip():
        problem = f"{bench.script} printed nothing on stdout: {tail(errors)}"
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / f"{bench.name}.md").write_text(text)
    (save_dir / f"{bench.name}.log").write_text(errors)
    meta = {"command": shown, "returncode": returncode, "seconds": round(seconds, 1), "problem": problem, "note": note}
    (save_dir / f"{bench.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"   {bench.name}: {problem or 'done'} in {seconds / 60:.1f} min", file=sys.stderr, flush=True)
    return Output(bench.name, text, returncode, seconds, shown, problem, note, parse_tables(text))


def load_output(name: str, directory: Path) -> Output:
    """A benchmark's output saved by an earlier run (DIR/<name>.md, with DIR/<name>.json when there)."""
    path = directory / f"{name}.md"
    meta_path = directory / f"{name}.json"
    meta: dict[str, object] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not path.exists():
        return Output(name, problem=f"no {path}")
    text = path.read_text()
    problem = str(meta.get("problem") or "")
    if not problem and not text.strip():
        log = directory / f"{name}.log"
        problem = f"{path.name} is empty" + (f": {tail(log.read_text())}" if log.exists() else "")
    seconds = meta.get("seconds")
    returncode = meta.get("returncode")
    return Output(
        name,
        text,
        returncode if isinstance(returncode, int) else None,
        float(seconds) if isinstance(seconds, int | float) else None,
        str(meta.get("command") or f"python bench/{name}.py"),
        problem,
        str(meta.get("note") or ""),
        parse_tables(text),
    )


# --- RESULTS.md ------------------------------------------------------------------------------------------


def results_section(outputs: Sequence[Output], outcomes: Sequence[Outcome], command: str, started: datetime) -> str:
    names = [o.name for o in outputs]
    everything = names == [b.name for b in BENCHMARKS]
    what = "every benchmark" if everything else "benchmarks " + ", ".join(f"`{n}.py`" for n in names)
    lines = [
        f"## {started:%Y-%m-%d}: {what}, against the targets ({started:%H:%M} UTC)",
        "",
        f"`{command}` ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end); each "
        "benchmark's own output follows the table, with the command that produced it.",
        "",
        target_table(outcomes),
        "",
    ]
    for out in outputs:
        took = f", {out.seconds / 60:.1f} min" if out.seconds is not None else ""
        status = f"exit status {out.returncode}" if out.returncode is not None else "saved output"
        lines += [f"**`{out.command}`** ({status}{took})" + (f": {out.note}" if out.note else ""), ""]
        if out.problem:
            lines += [f"Not measured: {out.problem}", ""]
        if out.text.strip():
            lines += [out.text.strip(), ""]
    return "\n".join(lines)


def insert_section(results: str, section: str) -> str:
    """The section goes below the intro paragraph: before the first "## " heading (or at the end)."""
    lines = results.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("## "):
            return "".join(lines[:index]) + section.rstrip("\n") + "\n\n" + "".join(lines[index:])
    return results.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run these only: {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 6 minutes in all; noisier ratios)")
    parser.add_argument("--from-dir", type=Path, metavar="DIR", help="parse DIR/<name>.md saved earlier, run nothing")
    parser.add_argument(
        "--save-dir", type=Path, metavar="DIR", help="where to save each output (default: a new directory in /tmp)"
    )
    parser.add_argument("--write", action="store_true", help="add a dated section at the top of bench/RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started = datetime.now(UTC)
    outputs: list[Output] = []
    if args.from_dir is not None:
        outputs = [load_output(b.name, args.from_dir) for b in selected]
    else:
        save_dir = args.save_dir or Path(tempfile.mkdtemp(prefix=f"chit-bench-{started:%Y%m%d-%H%M}-"))
        total = sum(b.quick_minutes if args.quick else b.minutes for b in selected)
        print(f"running {len(selected)} benchmark(s), about {total:.1f} min; outputs in {save_dir}", file=sys.stderr)
        with stop_on_sigterm():
            for bench in selected:
                outputs.append(run_benchmark(bench, args.quick, save_dir))
        print(f"outputs saved in {save_dir}", file=sys.stderr)
    outcomes = evaluate({o.name: o for o in outputs}, [b.name for b in selected])
    print(target_table(outcomes))
    for out in outputs:
        if out.note:
            print(f"\n- `{out.name}.py`: {out.note}.")
    if args.write:
        command = "python bench/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = results_section(outputs, outcomes, command.strip(), started)
        args.results.write_text(insert_section(args.results.read_text(), section))
        print(f"added a section to {args.results}", file=sys.stderr)
    complete = all(not o.problem for o in outputs) and all(o.measured is not None for o in outcomes)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
