"""Rendering of benchmark results: one run's summary, the side-by-side table, JSON.

Everything here is a pure function of results, so it is tested without running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from pbkv import tables
from pbkv.bench.loadgen import LoadResult

NS_PER_MS: Final = 1e6
TARGET_THROUGHPUT_RATIO_MIN: Final = 1.0
TARGET_P99_RATIO_MAX: Final = 2.0
TARGET_SINGLE_CLIENT_P50_RATIO_MAX: Final = 3.0
TARGET_CLIENTS_HIGH: Final = 64


def milliseconds(nanoseconds: float) -> str:
    """A latency for tables: 3 significant figures, in ms."""
    value = nanoseconds / NS_PER_MS
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def result_json(result: LoadResult) -> dict[str, Any]:
    """A JSON-ready dict of one run (latencies in ms)."""
    latency = result.latency
    return {
        "backend": result.backend,
        "spec": asdict(result.spec),
        "ops": result.ops,
        "reads": result.reads,
        "writes": result.writes,
        "ops_per_s": round(result.ops_per_s, 1),
        "latency_ms": {
            "mean": round(latency.mean_ns / NS_PER_MS, 4),
            "p50": latency.p50_ns / NS_PER_MS,
            "p99": latency.p99_ns / NS_PER_MS,
            "p99.9": latency.p999_ns / NS_PER_MS,
            "max": latency.max_ns / NS_PER_MS,
        },
        "errors": result.errors,
        "error_kinds": result.error_kinds,
        "retries": result.retries,
        "longest_gap_ms": result.longest_gap_ms,
        "kill_at_s": result.kill_at_s,
        "resumed_after_kill_ms": result.resumed_after_kill_ms,
        "notes": list(result.notes),
    }


def render_result(result: LoadResult) -> str:
    """A few human-readable lines for one run."""
    spec = result.spec
    latency = result.latency
    lines = [
        f"{result.backend}: {spec.clients} clients ({spec.procs} process"
        f"{'es' if spec.procs > 1 else ''}), {spec.duration_s:g} s, write ratio "
        f"{spec.write_ratio:g}, {spec.keys} keys, {spec.value_size}-byte values",
        f"  throughput  {result.ops_per_s:,.0f} ops/s  ({result.ops:,} ops: "
        f"{result.writes:,} writes, {result.reads:,} reads)",
        f"  latency ms  p50 {milliseconds(latency.p50_ns)}  p99 {milliseconds(latency.p99_ns)}"
        f"  p99.9 {milliseconds(latency.p999_ns)}  max {milliseconds(latency.max_ns)}"
        f"  mean {milliseconds(latency.mean_ns)}",
        f"  errors      {result.errors:,}"
        + "".join(f"\n    {count:,} x {kind}" for kind, count in result.error_kinds.items()),
        f"  retries     {'n/a' if result.retries is None else f'{result.retries:,}'}",
        f"  longest gap {result.longest_gap_ms:,.0f} ms with no completed operation",
    ]
    if result.kill_at_s is not None:
        resumed = result.resumed_after_kill_ms
        lines.append(
            f"  failover    primary killed at {result.kill_at_s:.3f} s; operations completed "
            + ("again after " + f"{resumed:,.0f} ms" if resumed is not None else "never again")
        )
    lines.extend(f"  note: {note}" for note in result.notes)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One cell of the side-by-side matrix."""

    clients: int
    write_ratio: float
    pbkv: LoadResult
    redis: LoadResult

    @property
    def throughput_ratio(self) -> float | None:
        return ratio(self.pbkv.ops_per_s, self.redis.ops_per_s)

    @property
    def p50_ratio(self) -> float | None:
        return ratio(self.pbkv.latency.p50_ns, self.redis.latency.p50_ns)

    @property
    def p99_ratio(self) -> float | None:
        return ratio(self.pbkv.latency.p99_ns, self.redis.latency.p99_ns)


TABLE_HEADER: Final = (
    "clients",
    "write ratio",
    "pbkv ops/s",
    "Redis ops/s",
    "pbkv/Redis",
    "pbkv p50 ms",
    "Redis p50 ms",
    "p50 ratio",
    "pbkv p99 ms",
    "Redis p99 ms",
    "p99 ratio",
    "pbkv p99.9 ms",
    "Redis p99.9 ms",
    "errors pbkv/Redis",
)


def comparison_rows(cells: Sequence[Comparison]) -> list[tuple[str, ...]]:
    return [
        (
            str(cell.clients),
            f"{cell.write_ratio:g}",
            f"{cell.pbkv.ops_per_s:,.0f}",
            f"{cell.redis.ops_per_s:,.0f}",
            format_ratio(cell.throughput_ratio),
            milliseconds(cell.pbkv.latency.p50_ns),
            milliseconds(cell.redis.latency.p50_ns),
            format_ratio(cell.p50_ratio),
            milliseconds(cell.pbkv.latency.p99_ns),
            milliseconds(cell.redis.latency.p99_ns),
            format_ratio(cell.p99_ratio),
            milliseconds(cell.pbkv.latency.p999_ns),
            milliseconds(cell.redis.latency.p999_ns),
            f"{cell.pbkv.errors}/{cell.redis.errors}",
        )
        for cell in cells
    ]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """A plain-text table with right-aligned columns under a rule, or a Markdown table."""
    return tables.render_table(header, rows, markdown=markdown, right=True, rule=True)


def render_comparison(cells: Sequence[Comparison], markdown: bool = False) -> str:
    """The side-by-side table of ``make bench``."""
    return render_table(TABLE_HEADER, comparison_rows(cells), markdown)


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    met: bool | None
    """None when the matrix has no cell the target speaks about."""
    detail: str


def _cell(cells: Sequence[Comparison], clients: int, write_ratio: float) -> Comparison | None:
    return next(
        (c for c in cells if c.clients == clients and abs(c.write_ratio - write_ratio) < 1e-9),
        None,
    )


def evaluate_targets(cells: Sequence[Comparison]) -> list[Verdict]:
    """Issue #5's throughput and latency targets, checked against the matrix."""
    verdicts: list[Verdict] = []
    writes = _cell(cells, TARGET_CLIENTS_HIGH, 1.0)
    verdicts.append(
        Verdict(
            "64 clients, w=1.0: pbkv >= 1.0x Redis ops/s",
            None if writes is None else (writes.throughput_ratio or 0) >= 1.0,
            "no such cell" if writes is None else format_ratio(writes.throughput_ratio),
        )
    )
    mixed = _cell(cells, TARGET_CLIENTS_HIGH, 0.5)
    mixed_met = None
    mixed_detail = "no such cell"
    if mixed is not None:
        mixed_met = (mixed.throughput_ratio or 0) >= TARGET_THROUGHPUT_RATIO_MIN and (
            mixed.p99_ratio or 0
        ) <= TARGET_P99_RATIO_MAX
        mixed_detail = (
            f"{format_ratio(mixed.throughput_ratio)} ops/s, p99 {format_ratio(mixed.p99_ratio)}"
        )
    verdicts.append(
        Verdict("64 clients, w=0.5: >= 1.0x ops/s and p99 <= 2x Redis", mixed_met, mixed_detail)
    )
    single = [c for c in cells if c.clients == 1]
    worst = max((c.p50_ratio or 0 for c in single), default=None)
    verdicts.append(
        Verdict(
            "1 client: p50 <= 3x Redis",
            None if worst is None else worst <= TARGET_SINGLE_CLIENT_P50_RATIO_MAX,
            "no such cell" if worst is None else f"worst {format_ratio(worst)}",
        )
    )
    return verdicts


def render_verdicts(verdicts: Sequence[Verdict]) -> str:
    marks = {True: "met", False: "NOT met", None: "not measured"}
    return "\n".join(f"  [{marks[v.met]}] {v.target}: {v.detail}" for v in verdicts)


def comparison_json(cells: Sequence[Comparison]) -> list[dict[str, Any]]:
    return [
        {
            "clients": cell.clients,
            "write_ratio": cell.write_ratio,
            "pbkv": result_json(cell.pbkv),
            "redis": result_json(cell.redis),
            "throughput_ratio": cell.throughput_ratio,
            "p50_ratio": cell.p50_ratio,
            "p99_ratio": cell.p99_ratio,
        }
        for cell in cells
    ]
