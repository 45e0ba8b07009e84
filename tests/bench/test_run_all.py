"""bench/run_all.py: its Markdown table parser and the targets it reads, on saved benchmark outputs.

The samples in ``samples/`` are tables copied from bench/RESULTS.md (``issuance.md``: the 2026-11-23
peer run with the chit RS256 rows of the run before it added; ``logins.md`` follows logins.py's
format). No benchmark runs here; one test starts a Python subprocess that fails at once.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "samples"


def load_run_all() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))  # as ``python bench/run_all.py`` has it: its siblings import
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "bench" / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


run_all = load_run_all()
TIMES = "\u00d7"


def outcomes_from(directory: Path, *names: str) -> dict[str, Any]:
    selected = list(names) or [b.name for b in run_all.BENCHMARKS]
    outputs = {name: run_all.load_output(name, directory) for name in selected}
    return {o.spec.name: o for o in run_all.evaluate(outputs, selected)}


def test_numbers_with_separators_signs_and_suffixes() -> None:
    assert run_all.number("1,225") == 1225
    assert run_all.number(f"**0.96{TIMES}** (1.21{TIMES})") == 0.96
    assert run_all.numbers(f"0.96{TIMES} (1.21{TIMES})") == [0.96, 1.21]
    assert run_all.number("+37") == 37
    assert run_all.number("-0.13") == -0.13
    assert run_all.number("3903, 4257, 2732") == 3903
    assert run_all.number("(shared)") is None
    assert run_all.quantity(f"0.68{TIMES}") == (0.68, TIMES)
    assert run_all.quantity("409 µs") == (409, "µs")
    assert run_all.quantity("12,495") == (12495, "")


def test_tables_become_row_dicts_with_their_heading() -> None:
    text = (SAMPLES / "issuance.md").read_text()
    tables = run_all.parse_tables(text)
    assert [t.heading for t in tables] == ["1 worker", "2 workers"]
    rows = tables[0].dicts()
    assert rows[2]["server"] == "chit EdDSA"
    assert rows[2]["server CPU µs per 2xx"] == "482"
    assert rows[4]["server"].startswith("peer: oidc-provider")
    assert f"{TIMES} peer (1 chit worker" in tables[0].after
    # Repeated headers stay apart, empty ones get a name.
    verification = run_all.parse_tables((SAMPLES / "verification.md").read_text())[0]
    assert f"{TIMES} PyJWT (2)" in verification.unique_headers()
    logins = run_all.parse_tables((SAMPLES / "logins.md").read_text())
    assert "column 3" in logins[-1].unique_headers()


def test_every_target_is_read_from_the_samples() -> None:
    outcomes = outcomes_from(SAMPLES)
    assert len(outcomes) == len(run_all.SPECS)
    values = {name: (o.measured.value, o.met) for name, o in outcomes.items() if o.measured is not None}
    assert len(values) == len(outcomes), [o.reason for o in outcomes.values() if o.measured is None]

    def value(start: str) -> tuple[float, str]:
        """The target named exactly start, else the only one whose name starts with it."""
        (found,) = [values[start]] if start in values else [v for n, v in values.items() if n.startswith(start)]
        return round(found[0], 2), found[1]

    assert value("Issuance (19): chit EdDSA server CPU") == (round(482 / 274, 2), "no")
    assert value("Issuance (19): two chit EdDSA workers") == (round(4238 / 6876, 2), "no")
    assert value("Issuance (19): chit RS256 CPU") == (round(674 / 401, 2), "no")
    assert value("Issuance (19): p99") == (round(71.1 / 6.9, 2), "no")
    assert value("Delegation (15, 19)") == (1.37, "yes")
    assert value("Delegation (15): deferred") == (4.11, "no")
    assert value("Protected endpoint (19): `/chit`") == (0.68, "no")
    assert value("Protected endpoint (19): the same with") == (0.72, "no")
    assert value("Protected endpoint (19): uncached") == (round(409 / 433, 2), "yes")
    assert value("Protected endpoint (19): the dependency's own work") == (2.79, "reported")
    assert value("SDK verify+require, no cache") == (0.87, "yes")
    assert value("SDK verify+require, cached") == (1.22, "yes")
    assert value("Verification") == (0.84, "yes")
    assert value("Chits (16): mint") == (1.03, "yes")
    assert value("Chits (16): attenuate one hop ÷") == (0.85, "yes")
    assert value("Chits (16): attenuate one hop") == (111.0, "yes")
    assert value("Chits (16): attenuate a chit from its text (verify first) ÷") == (1.04, "yes")
    assert value("Chits (16): attenuate a chit from its text (verify first)") == (219.7, "reported")
    assert value("Chits (16): verify+authorize, token not cached") == (1.51, "no")
    assert value("Chits (16): the same, blocks not remembered") == (1.81, "no")
    assert value("Chits (16): verify+authorize, cached") == (3.40, "yes")
    assert value("Revocation (17): propagation p99, embedded") == (2.5, "yes")
    assert value("Revocation (17): propagation p99, Redis") == (2.4, "yes")
    assert value("Revocation (17): the list's check") == (0.12, "yes")
    assert value("Password logins (19): login rate") == (0.92, "yes")
    assert value("Password logins (19): Argon2id") == (1.0, "yes")
    assert value("Password logins (19): client credentials") == (round(1820.2 / 2410.5, 2), "reported")


def test_stretch_bound() -> None:
    spec = next(s for s in run_all.SPECS if s.stretch is not None)
    assert run_all.Outcome(spec, run_all.Measured(0.6)).met == "stretch met"
    assert run_all.Outcome(spec, run_all.Measured(0.9)).met == "yes"
    assert run_all.Outcome(spec, run_all.Measured(1.1)).met == "no"


def test_missing_or_changed_output_is_not_measured(tmp_path: Path) -> None:
    for sample in SAMPLES.glob("*.md"):
        shutil.copy(sample, tmp_path / sample.name)
    issuance = tmp_path / "issuance.md"
    issuance.write_text(issuance.read_text().replace("server CPU µs per 2xx", "server CPU per token"))
    revocation = tmp_path / "revocation_propagation.md"
    revocation.write_text("".join(x for x in revocation.read_text().splitlines(True) if not x.startswith("| redis")))
    (tmp_path / "chits.md").write_text("")
    (tmp_path / "logins.md").unlink()

    outcomes = outcomes_from(tmp_path)
    reasons = {name: o.reason for name, o in outcomes.items() if o.measured is None}
    cpu = reasons["Issuance (19): chit EdDSA server CPU per token ÷ oidc-provider's, 1 worker"]
    assert "no column 'server CPU µs per 2xx'" in cpu
    assert "Issuance (19): two chit EdDSA workers' tokens/s ÷ the Node peer's" not in reasons
    assert "no `redis` row" in reasons["Revocation (17): propagation p99, Redis"]
    assert all("chits.md is empty" in r for n, r in reasons.items() if n.startswith("Chits"))
    assert all("logins.md" in r for n, r in reasons.items() if n.startswith("Password logins"))
    table = run_all.target_table(list(outcomes.values()))
    assert "not measured: " in table
    assert table.count("\n| ") == len(run_all.SPECS)  # one row per target under the header


def test_from_dir_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all.main(["--from-dir", str(SAMPLES), "--only", "sdk_endpoint", "exchange"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| target | measured | bound | met | source |")
    assert "`sdk_endpoint.py`" in printed
    assert "`issuance.py`" not in printed


def test_write_puts_the_section_below_the_intro(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nIntro.\n\n## 2026-12-06: older\n\nold text\n")
    assert run_all.main(["--from-dir", str(SAMPLES), "--only", "chits", "--write", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nIntro.\n\n## ")
    assert text.index("against the targets") < text.index("| target | measured |") < text.index("## 2026-12-06: older")
    assert "### Chits: mint, attenuate" in text


def test_a_failing_benchmark_is_reported_not_raised(tmp_path: Path) -> None:
    broken = run_all.Benchmark("no_such_benchmark", (), (), 0.1, 0.1, 1)
    out = run_all.execute(broken, [], False, tmp_path, "")
    assert out.problem.startswith("bench/no_such_benchmark.py exited with 2")
    assert (tmp_path / "no_such_benchmark.md").exists()
    assert (tmp_path / "no_such_benchmark.json").exists()


def test_the_rs256_row_names_the_floor_that_signing_alone_sets(tmp_path: Path) -> None:
    """issuance.py ends each table with RS256's least ratio to EdDSA given the two signatures' own costs;
    run_all.py carries it into the RS256 target's detail."""
    import issuance  # bench/ is on the path (load_run_all)

    def target(label: str, cpu: float) -> Any:
        return issuance.Target(label, "http://127.0.0.1:1/token", 0, runs=[{"cpu_us_per_ok": cpu}])

    targets = [target("chit EdDSA", 400), target("chit RS256", 700)]
    line = issuance.rs256_floor(targets, {"RS256": 280, "EdDSA": 30})
    assert line is not None
    assert f"700 / 400 µs = **1.75{TIMES}**" in line
    assert f"at least 650 µs: floor **1.62{TIMES}**" in line  # (400 + 280 - 30) / 400
    assert "an EdDSA token of at least 500 µs" in line
    assert issuance.rs256_floor(targets[:1], {"RS256": 280, "EdDSA": 30}) is None
    assert issuance.rs256_floor(targets, {}) is None

    sample = (SAMPLES / "issuance.md").read_text().replace("\n#### 2 workers", f"\n{line}\n\n#### 2 workers")
    (tmp_path / "issuance.md").write_text(sample)
    rs256 = outcomes_from(tmp_path, "issuance")["Issuance (19): chit RS256 CPU per token ÷ chit EdDSA's"]
    assert rs256.measured.detail.endswith(f"signing alone sets the floor at 1.62{TIMES}")


def test_the_protected_endpoint_row_names_fastapis_own_ceiling() -> None:
    """`/noop-security`, FastAPI's `Security` around a dependency that does nothing, bounds what any dependency
    behind it can reach: the `/chit` target shows it beside the ratio."""
    chit = outcomes_from(SAMPLES, "sdk_endpoint")["Protected endpoint (19): `/chit` req/s ÷ `/open`, repeated token"]
    assert chit.measured.detail.endswith(f"FastAPI's `Security` around a do-nothing dependency 0.67{TIMES}")
