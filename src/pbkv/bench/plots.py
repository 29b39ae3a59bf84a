"""Pictures of benchmark runs: throughput over time (a failover's gap is visible) and the latency
percentile curve, as plain SVG (``pbkv.svg``).

Throughput comes from the per-slot completion counts of the load generator (one slot is
``THROUGHPUT_SLOT_NS``, 100 ms), so a dip to zero is a stretch with no completed operation. The
latency curve is exact (nearest-rank percentiles of every operation); its x axis counts "nines"
(``-log10(1 - p)``: 90 % at 1, 99 % at 2, 99.9 % at 3) so the tail is as wide as the body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pbkv.bench.loadgen import LoadResult
from pbkv.bench.stats import NS_PER_MS, THROUGHPUT_SLOT_NS
from pbkv.svg import Chart, Marker, Series, render

SLOT_S: Final = THROUGHPUT_SLOT_NS / 1e9
NINES_MAX: Final = 4.5
"""Where the maximum latency (p100, infinitely many nines) is drawn on the nines axis."""
NINES_TICKS: Final = ((0.0, "0%"), (math.log10(2), "50%"), (1.0, "90%"), (2.0, "99%"),
                      (3.0, "99.9%"), (4.0, "99.99%"), (NINES_MAX, "max"))  # fmt: skip


def label(result: LoadResult) -> str:
    spec = result.spec
    return f"{result.backend}, {spec.clients} clients, writes {spec.write_ratio:g}"


def throughput_chart(results: Sequence[LoadResult], title: str = "") -> Chart:
    """Operations per second in each 100 ms of the measured window, one line per run; the
    primary's kill (``--kill-primary-at``) as a marker."""
    series = [
        Series(
            label(result),
            [(index * SLOT_S, count / SLOT_S) for index, count in enumerate(result.throughput)],
        )
        for result in results
    ]
    markers = []
    notes = []
    for result in results:
        if result.kill_at_s is not None:
            markers.append(Marker(result.kill_at_s, "primary killed", "#cf222e"))
            resumed = result.resumed_after_kill_ms
            notes.append(
                f"{label(result)}: primary killed at {result.kill_at_s:.2f} s; operations "
                + (f"completed again after {resumed:,.0f} ms" if resumed is not None else "never")
            )
        notes.append(f"{label(result)}: {result.ops_per_s:,.0f} ops/s over the window, "
                     f"longest gap {result.longest_gap_ms:,.0f} ms")  # fmt: skip
    return Chart(
        title=title or "Throughput over time",
        x_label="seconds into the measured window",
        y_label="operations per second",
        series=series,
        markers=markers,
        notes=notes,
    )


def nines(percentile: float) -> float:
    """The nines axis position of a percentile in [0, 100]."""
    if percentile >= 100.0:
        return NINES_MAX
    return min(NINES_MAX, -math.log10(1.0 - percentile / 100.0))


def latency_chart(results: Sequence[LoadResult], title: str = "") -> Chart:
    """Latency (ms) at each percentile, one line per run."""
    series = [
        Series(label(result), [(nines(p), ms) for p, ms in result.latency_curve])
        for result in results
    ]
    notes = [
        f"{label(r)}: p50 {r.latency.p50_ns / NS_PER_MS:.3f} ms, p99 "
        f"{r.latency.p99_ns / NS_PER_MS:.3f} ms, max {r.latency.max_ns / NS_PER_MS:.1f} ms"
        for r in results
    ]
    return Chart(
        title=title or "Latency percentiles",
        x_label="percentile (nines scale)",
        y_label="latency (ms, log scale)",
        series=series,
        x_range=(0.0, NINES_MAX),
        x_ticks=NINES_TICKS,
        y_log=True,
        notes=notes,
    )


def latency_path(path: Path) -> Path:
    """Where ``--plot FILE.svg`` puts the latency picture: ``FILE-latency.svg``."""
    return path.with_name(f"{path.stem}-latency{path.suffix or '.svg'}")


def write_plots(path: Path, results: Sequence[LoadResult], title: str = "") -> list[Path]:
    """Write the throughput picture to ``path`` and the latency one beside it; returns both."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(throughput_chart(results, title)), encoding="utf-8")
    latency = latency_path(path)
    latency.write_text(render(latency_chart(results, title and f"{title}: latency")), "utf-8")
    return [path, latency]
