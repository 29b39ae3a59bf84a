"""Benchmark pictures: the throughput line shows the failover gap, the latency curve is
monotone on the nines axis, and ``pbkv bench --plot`` writes both files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from pbkv.bench.loadgen import LoadResult, LoadSpec
from pbkv.bench.plots import latency_chart, nines, throughput_chart
from pbkv.bench.stats import LatencySummary, latency_curve
from pbkv.cli.bench_commands import bench
from pbkv.svg import Chart, Series, nice_ticks, render


def _result(throughput: tuple[int, ...], kill_at_s: float | None = None) -> LoadResult:
    samples = [1_000_000 * (1 + i % 10) for i in range(1000)]
    return LoadResult(
        spec=LoadSpec(clients=4, duration_s=len(throughput) / 10),
        backend="pbkv",
        ops=sum(throughput),
        writes=0,
        errors=0,
        error_kinds={},
        retries=0,
        latency=LatencySummary.of(samples),
        longest_gap_ms=300.0,
        kill_at_s=kill_at_s,
        resumed_after_kill_ms=300.0 if kill_at_s is not None else None,
        throughput=throughput,
        latency_curve=latency_curve(samples),
    )


def _polyline_points(svg: str) -> list[tuple[float, float]]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    line = next(e for e in root.iter() if e.tag.endswith("polyline"))
    return [
        (float(x), float(y)) for x, y in re.findall(r"([\d.]+),([\d.]+)", line.get("points", ""))
    ]


def test_the_failover_gap_is_at_the_bottom_of_the_throughput_line() -> None:
    counts = (100,) * 10 + (0, 0, 0) + (100,) * 7
    svg = render(throughput_chart([_result(counts, kill_at_s=1.0)]))
    points = _polyline_points(svg)
    assert len(points) == 20
    bottom = max(y for _, y in points)  # SVG y grows downwards
    assert [i for i, (_, y) in enumerate(points) if y == bottom] == [10, 11, 12]
    assert "primary killed" in svg and "completed again after 300 ms" in svg


def test_the_latency_curve_rises_on_a_nines_axis() -> None:
    result = _result((100,) * 10)
    points = [y for _, y in result.latency_curve]
    assert points == sorted(points) and points[-1] == 10.0  # ms
    assert nines(90.0) == 1.0 and round(nines(99.9), 6) == 3.0 and nines(100.0) > 4
    svg = render(latency_chart([result]))
    assert ">99.9%<" in svg and ">max<" in svg and "p99 10.000 ms" in svg


def test_labels_are_escaped_and_ticks_are_round() -> None:
    svg = render(Chart("a <b> & c", "x", "y", [Series("s<1>", [(0, 1), (1, 2)])]))
    ET.fromstring(svg)
    assert "a &lt;b&gt; &amp; c" in svg and "s&lt;1&gt;" in svg
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80]
    assert nice_ticks(0, 1.05) == [0, 0.5, 1.0]


def test_bench_plot_writes_both_pictures(tmp_path: Path) -> None:
    target = tmp_path / "run.svg"
    arguments = ["--backend", "null", "--clients", "2", "--duration", "0.3", "--plot", str(target)]
    outcome = CliRunner().invoke(bench, [*arguments, "--warmup", "0"])
    assert outcome.exit_code == 0, outcome.output
    assert target.exists() and (tmp_path / "run-latency.svg").exists()
    assert len(_polyline_points(target.read_text())) == 3  # 0.3 s in 100 ms slots
