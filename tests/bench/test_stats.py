"""Percentile maths and the completion timeline."""

from __future__ import annotations

from array import array

import pytest

from pbkv.bench.stats import (
    LatencySummary,
    longest_gap_ms,
    merge_latencies,
    merge_timelines,
    percentile,
    resumed_after_ns,
    timeline_slots,
)


def test_percentile_is_nearest_rank() -> None:
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 0.50) == 50
    assert percentile(samples, 0.99) == 99
    assert percentile(samples, 0.999) == 100
    assert percentile(samples, 1.0) == 100
    assert percentile(samples, 0.001) == 1


def test_percentile_of_small_and_empty_samples() -> None:
    assert percentile([7], 0.5) == 7
    assert percentile([7], 0.999) == 7
    assert percentile([1, 2], 0.5) == 1
    assert percentile([1, 2], 0.51) == 2
    assert percentile([], 0.5) == 0


def test_percentile_rejects_fractions_out_of_range() -> None:
    with pytest.raises(ValueError, match="fraction"):
        percentile([1], 0.0)
    with pytest.raises(ValueError, match="fraction"):
        percentile([1], 1.5)


def test_p999_needs_a_thousand_samples_to_differ_from_the_max() -> None:
    samples = [1] * 999 + [1000]
    assert percentile(samples, 0.999) == 1
    assert percentile(samples, 1.0) == 1000


def test_latency_summary_of_unsorted_samples() -> None:
    summary = LatencySummary.of([5, 1, 4, 2, 3])
    assert summary.count == 5
    assert summary.p50_ns == 3
    assert summary.max_ns == 5
    assert summary.mean_ns == 3.0
    assert LatencySummary.of([]).count == 0


def test_latencies_from_processes_merge_exactly() -> None:
    first = array("q", [3, 1]).tobytes()
    second = array("q", [2]).tobytes()
    assert sorted(merge_latencies([first, second])) == [1, 2, 3]


def test_timelines_merge_by_or_whatever_their_lengths() -> None:
    merged = merge_timelines([bytes([1, 0, 0, 0]), bytes([0, 0, 1]), b""])
    assert merged == bytearray([1, 0, 1, 0])
    assert merge_timelines([]) == bytearray()


def test_longest_gap_counts_empty_slots_including_the_edges() -> None:
    assert longest_gap_ms(bytes([1, 0, 0, 1, 0, 1])) == 2.0
    assert longest_gap_ms(bytes([0, 0, 0, 1])) == 3.0
    assert longest_gap_ms(bytes([1, 0, 0, 0, 0])) == 4.0
    assert longest_gap_ms(bytes([1, 1])) == 0.0
    assert longest_gap_ms(bytes(5)) == 5.0


def test_timeline_slots_round_up_to_whole_milliseconds() -> None:
    assert timeline_slots(1_000_000) == 1
    assert timeline_slots(1_000_001) == 2
    assert timeline_slots(0) == 1


def test_resumed_after_skips_stray_completions_right_after_the_event() -> None:
    # Event at 2.5 ms; one reply already on the wire completes at slot 3; then silence until 9.
    timeline = bytes([1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    assert resumed_after_ns(timeline, 2_500_000) == 9_000_000 - 2_500_000


def test_resumed_after_is_none_when_nothing_completed_again() -> None:
    assert resumed_after_ns(bytes([1, 1, 0, 0]), 1_500_000) is None


def test_resumed_after_an_event_with_no_gap_is_the_next_completion() -> None:
    assert resumed_after_ns(bytes([1, 1, 1]), 1_500_000) == 500_000
