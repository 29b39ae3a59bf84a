"""Latency statistics and the completion timeline used to measure failover gaps.

Percentiles are exact: every latency sample of a run is kept (8 bytes each in an
``array('q')``, a few MB for a 5-second run at 60,000 ops/s), samples from all processes are
merged and sorted, and the p-th percentile is the nearest-rank value: the smallest sample such
that at least p % of the samples are less than or equal to it.

The completion timeline is a bitmap with one byte per ``TIMELINE_RESOLUTION_NS`` of the measured
window; a worker marks the slot in which each operation completed. Bitmaps from several
processes merge by OR (they share ``CLOCK_MONOTONIC``, which ``time.perf_counter_ns`` reads on
Linux). The longest run of empty slots is the longest interval with no completion, exact to one
slot (1 ms).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

NS_PER_MS: Final = 1_000_000
TIMELINE_RESOLUTION_NS: Final = NS_PER_MS
_EMPTY_RUN: Final = re.compile(b"\x00+")


def percentile(sorted_samples: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of ascending ``sorted_samples``; ``fraction`` in (0, 1].

    Returns 0 for an empty sequence.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"percentile fraction must be in (0, 1], got {fraction}")
    count = len(sorted_samples)
    if count == 0:
        return 0
    rank = math.ceil(fraction * count - 1e-9)
    return sorted_samples[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Exact latency figures of a run, in nanoseconds."""

    count: int
    mean_ns: float
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int

    @classmethod
    def of(cls, samples: Iterable[int]) -> LatencySummary:
        ordered = sorted(samples)
        if not ordered:
            return cls(0, 0.0, 0, 0, 0, 0)
        return cls(
            count=len(ordered),
            mean_ns=sum(ordered) / len(ordered),
            p50_ns=percentile(ordered, 0.50),
            p99_ns=percentile(ordered, 0.99),
            p999_ns=percentile(ordered, 0.999),
            max_ns=ordered[-1],
        )


THROUGHPUT_SLOT_NS: Final = 100 * NS_PER_MS
"""Width of one throughput-over-time slot (the ``--plot`` resolution)."""
CURVE_PERCENTILES: Final = (
    0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
)  # fmt: skip
"""Where the latency percentile curve (``--plot``) is sampled."""


def throughput_slots(duration_ns: int) -> int:
    return max(1, -(-duration_ns // THROUGHPUT_SLOT_NS))


def merge_counts(parts: Iterable[bytes]) -> array[int]:
    """Add up per-slot completion counts (``array('q')`` images) of several processes."""
    merged: array[int] = array("q")
    for part in parts:
        counts: array[int] = array("q")
        counts.frombytes(part)
        if len(counts) > len(merged):
            merged.extend([0] * (len(counts) - len(merged)))
        for index, count in enumerate(counts):
            merged[index] += count
    return merged


def latency_curve(samples: Iterable[int]) -> tuple[tuple[float, float], ...]:
    """(percentile, latency in ms) at ``CURVE_PERCENTILES``, exact (nearest rank)."""
    ordered = sorted(samples)
    if not ordered:
        return ()
    return tuple((100.0 * q, percentile(ordered, q) / NS_PER_MS) for q in CURVE_PERCENTILES)


def merge_latencies(parts: Iterable[bytes]) -> array[int]:
    """Concatenate ``array('q')`` byte images from several processes."""
    merged: array[int] = array("q")
    for part in parts:
        merged.frombytes(part)
    return merged


def timeline_slots(duration_ns: int) -> int:
    """Number of timeline slots covering a measured window of ``duration_ns``."""
    return max(1, -(-duration_ns // TIMELINE_RESOLUTION_NS))


def merge_timelines(parts: Iterable[bytes]) -> bytearray:
    """OR together completion bitmaps of equal or different lengths."""
    images = list(parts)
    length = max((len(part) for part in images), default=0)
    merged = 0
    for part in images:
        # Slots hold 0 or 1, so a bytewise OR is an OR of the whole images as big integers
        # (padded on the right to the same length).
        merged |= int.from_bytes(bytes(part).ljust(length, b"\x00"), "big")
    return bytearray(merged.to_bytes(length, "big"))


def longest_gap_ms(timeline: bytes | bytearray, start_slot: int = 0) -> float:
    """Longest run of slots with no completion at or after ``start_slot``, in ms.

    A run that begins before the first completion or lasts to the end of the window counts too:
    a window in which nothing completed at all is one gap as long as the window.
    """
    runs = (len(match) for match in _EMPTY_RUN.findall(bytes(timeline), max(start_slot, 0)))
    return max(runs, default=0) * TIMELINE_RESOLUTION_NS / NS_PER_MS


def resumed_after_ns(timeline: bytes | bytearray, offset_ns: int) -> int | None:
    """When completions resumed after an event at ``offset_ns`` into the window: the end of the
    longest empty run that starts at or after the event's slot, as ns after the event (exact to
    one slot). Replies already on the wire at the event may complete just after it; taking the
    longest run skips them. None when nothing completed after the event.
    """
    slot = max(offset_ns // TIMELINE_RESOLUTION_NS, 0)
    image = bytes(timeline)
    best_end = None
    best_length = 0
    for match in _EMPTY_RUN.finditer(image, slot):
        if match.end() < len(image) and match.end() - match.start() > best_length:
            best_length = match.end() - match.start()
            best_end = match.end()
    if best_end is None:
        index = image.find(b"\x01", slot + 1)  # the event's own slot may predate it
        if index < 0:
            return None
        best_end = index
    return max(best_end * TIMELINE_RESOLUTION_NS - offset_ns, 0)
