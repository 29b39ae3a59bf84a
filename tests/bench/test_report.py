"""Tables, verdicts and JSON from fixed results."""

from __future__ import annotations

import json
from pathlib import Path

import pbkv.wire
from pbkv import build
from pbkv.bench.loadgen import LoadResult, LoadSpec
from pbkv.bench.report import (
    Comparison,
    evaluate_targets,
    milliseconds,
    render_comparison,
    render_result,
    render_verdicts,
    result_json,
)
from pbkv.bench.stats import LatencySummary
from pbkv.bench.suite import (
    PROCS_HIGH_DEFAULT,
    RECORD_BEGIN,
    RECORD_END,
    Cell,
    generator_processes,
    record,
    render_record,
)


def result(backend: str, clients: int, ops: int, p50_us: int, p99_us: int) -> LoadResult:
    spec = LoadSpec(clients=clients, duration_s=1.0, write_ratio=1.0)
    latency = LatencySummary(ops, p50_us * 1e3, p50_us * 1000, p99_us * 1000, p99_us * 1000, 0)
    return LoadResult(spec, backend, ops, ops, 0, {}, 0, latency, 2.0)


def matrix(pbkv_ops: int, pbkv_p99_us: int) -> list[Comparison]:
    return [
        Comparison(1, 1.0, result("pbkv", 1, 4000, 250, 400), result("redis", 1, 8000, 100, 200)),
        Comparison(
            64,
            1.0,
            result("pbkv", 64, pbkv_ops, 900, 2000),
            result("redis", 64, 50_000, 1000, 2000),
        ),
        Comparison(
            64,
            0.5,
            result("pbkv", 64, pbkv_ops, 900, pbkv_p99_us),
            result("redis", 64, 60_000, 1000, 2000),
        ),
    ]


def test_milliseconds_keep_three_significant_figures() -> None:
    assert milliseconds(123_456) == "0.123"
    assert milliseconds(1_234_567) == "1.23"
    assert milliseconds(12_345_678) == "12.3"
    assert milliseconds(123_456_789) == "123"


def test_table_has_both_systems_and_ratios() -> None:
    text = render_comparison(matrix(25_000, 3000))
    lines = text.splitlines()
    assert "pbkv ops/s" in lines[0] and "Redis ops/s" in lines[0] and "pbkv/Redis" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    assert "0.50x" in lines[2]  # 1 client: 4000 / 8000
    assert "2.50x" in lines[2]  # p50 250 / 100
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_markdown_table_has_a_separator_row() -> None:
    lines = render_comparison(matrix(25_000, 3000), markdown=True).splitlines()
    assert lines[0].startswith("| clients |")
    assert lines[1].startswith("|---:|")
    assert len(lines) == 5


def test_verdicts_against_the_targets() -> None:
    slow = {v.target: v.met for v in evaluate_targets(matrix(25_000, 3000))}
    assert list(slow.values()) == [False, False, True]
    fast = evaluate_targets(matrix(70_000, 3000))
    assert [v.met for v in fast] == [True, True, True]
    high_tail = evaluate_targets(matrix(70_000, 5000))
    assert [v.met for v in high_tail] == [True, False, True]
    assert "NOT met" in render_verdicts(high_tail)
    assert [v.met for v in evaluate_targets([])] == [None, None, None]


def test_result_json_is_serialisable_and_in_milliseconds() -> None:
    document = result_json(result("pbkv", 4, 1000, 250, 400))
    assert json.loads(json.dumps(document))["latency_ms"]["p50"] == 0.25
    assert document["ops_per_s"] == 1000.0


def test_render_result_mentions_the_failover_when_there_was_one() -> None:
    plain = render_result(result("pbkv", 4, 1000, 250, 400))
    assert "failover" not in plain
    killed = LoadResult(
        LoadSpec(), "pbkv", 10, 10, 0, {}, 3, LatencySummary.of([1]), 420.0, 2.0, 415.0
    )
    assert "killed at 2.000 s" in render_result(killed)
    assert "415 ms" in render_result(killed)


def test_record_replaces_only_the_marked_section(tmp_path: Path) -> None:
    document = tmp_path / "performance.md"
    document.write_text(f"# Title\n\nbefore\n\n{RECORD_BEGIN}\nold\n{RECORD_END}\n\nafter\n")
    record(document, f"{RECORD_BEGIN}\nnew\n{RECORD_END}")
    text = document.read_text()
    assert "new" in text and "old" not in text
    assert text.startswith("# Title") and text.endswith("after\n")
    empty = tmp_path / "new.md"
    record(empty, f"{RECORD_BEGIN}\nfirst\n{RECORD_END}")
    assert empty.read_text() == f"{RECORD_BEGIN}\nfirst\n{RECORD_END}\n"


def test_recorded_section_has_markers_machine_command_and_both_tables() -> None:
    comparisons = matrix(25_000, 3000)
    cells = [
        Cell(comparison, {"generator": 80.0, "primary": 45.0}, {"generator": 95.0})
        for comparison in comparisons
    ]
    section = render_record(
        cells, "make bench", LoadSpec(), {"pbkv": 2, "redis": 1}, "one run per cell and system"
    )
    assert section.startswith(RECORD_BEGIN) and section.endswith(RECORD_END)
    assert "cores" in section and "`make bench`" in section
    assert "2 for pbkv and 1 for Redis" in section
    assert "| pbkv generator |" in section and "80%" in section
    assert "- [NOT met] 64 clients, w=1.0" in section


def test_generator_processes_follow_the_measured_rule_unless_set() -> None:
    """One process for one client; Redis one; pbkv two, but one where its reads are leased and
    mixed with writes (docs/performance.md, "Choosing --procs"); a number given wins."""
    rule = PROCS_HIGH_DEFAULT
    assert generator_processes("pbkv", 1, 0.5, True, rule) == 1
    assert generator_processes("redis", 16, 0.5, True, rule) == 1
    assert generator_processes("pbkv", 16, 0.5, False, rule) == 2  # confirmed reads
    assert generator_processes("pbkv", 64, 0.5, True, rule) == 1  # leased, mixed
    assert generator_processes("pbkv", 16, 0.0, True, rule) == 2  # leased, reads only
    assert generator_processes("pbkv", 16, 1.0, True, rule) == 2  # writes only: no leased read
    assert generator_processes("pbkv", 16, 0.5, True, {"pbkv": 3, "redis": 1}) == 3
    assert generator_processes("pbkv", 2, 0.5, False, {"pbkv": 4, "redis": 1}) == 2  # <= clients
    section = render_record([], "x", LoadSpec(), rule, "one run", read_leases=True)
    assert "otherwise 2 (1 where its reads are leased and mixed with writes) for pbkv" in section


def test_a_read_lease_run_goes_to_its_own_section_and_leaves_the_default_alone(
    tmp_path: Path,
) -> None:
    cells = [Cell(comparison, {}, {}) for comparison in matrix(25_000, 3000)]
    spec, procs = LoadSpec(), {"pbkv": 2, "redis": 1}
    section = render_record(cells, "x", spec, procs, "one run", read_leases=True)
    assert section.startswith("<!-- bench-leases:begin -->") and "--read-leases" in section
    document = tmp_path / "performance.md"
    document.write_text(f"{RECORD_BEGIN}\ndefault\n{RECORD_END}\n")
    record(document, section, read_leases=True)
    text = document.read_text()
    assert "default" in text and text.count("bench-leases:begin") == 1


def test_a_two_backup_run_has_its_own_section_naming_wait_2() -> None:
    cells = [Cell(comparison, {}, {}) for comparison in matrix(25_000, 3000)]
    section = render_record(cells, "x", LoadSpec(), {"pbkv": 2, "redis": 1}, "one", backups=2)
    assert section.startswith("<!-- bench-backups-2:begin -->") and "`WAIT 2 0`" in section


def test_a_compiled_run_goes_to_its_own_section_and_leaves_the_pure_one_alone(
    tmp_path: Path,
) -> None:
    cells = [Cell(comparison, {}, {}) for comparison in matrix(25_000, 3000)]
    spec, procs = LoadSpec(), {"pbkv": 2, "redis": 1}
    section = render_record(cells, "x", spec, procs, "one run", "always", compiled=True)
    assert section.startswith("<!-- bench-fsync-always-compiled:begin -->")
    assert "compiled with mypyc" in section
    document = tmp_path / "performance.md"
    document.write_text(f"{RECORD_BEGIN}\npure\n{RECORD_END}\n")
    record(document, section, "always", compiled=True)
    record(document, section, "always", compiled=True)
    text = document.read_text()
    assert "pure" in text and text.count("bench-fsync-always-compiled:begin") == 1


def test_the_build_is_told_apart_by_how_the_wire_codec_was_loaded() -> None:
    assert build.compiled() == pbkv.wire.__file__.endswith(".so")
    assert build.describe() in ("pure Python", "compiled (mypyc)")
