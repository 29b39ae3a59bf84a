"""The demo report's picture: operations completed per second over the run, each fault marked,
and the view timeline beneath (which server was primary when).

Times are seconds since the demo started (``time.monotonic()`` of the narrator), the clock of
the workload's history, the faults and the views alike, so the three line up exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pbkv.check.history import Operation
from pbkv.cluster.state import ClusterState
from pbkv.demo.context import Fault
from pbkv.demo.watch import ViewRecord
from pbkv.svg import Chart, Marker, Series, Span, bucket_counts

BUCKET_S: Final = 0.25
FAILOVER_COLOUR: Final = "#cf222e"
STEP_COLOUR: Final = "#6e7781"


def _name(state: ClusterState, address: str | None) -> str:
    if address is None:
        return "-"
    record = state.find(address)
    return record.name if record else address


def operations_chart(
    state: ClusterState,
    started: float,
    duration_s: float,
    history: Sequence[Operation],
    faults: Sequence[Fault],
    views: Sequence[ViewRecord],
) -> Chart:
    """Completed operations per second (``BUCKET_S`` buckets), faults, and views."""
    completed = [op.complete - started for op in history if op.complete is not None]
    counts = bucket_counts(completed, 0.0, duration_s, BUCKET_S)
    series = Series(
        "client operations completed per second",
        [(index * BUCKET_S, count / BUCKET_S) for index, count in enumerate(counts)],
    )
    markers = [
        Marker(
            fault.at - started,
            fault.label,
            FAILOVER_COLOUR if fault.replaces_primary else STEP_COLOUR,
        )
        for fault in faults
    ]
    lane = []
    for index, record in enumerate(views):
        end = views[index + 1].seen_at if index + 1 < len(views) else started + duration_s
        primary = _name(state, record.view.primary)
        lane.append(
            Span(
                record.seen_at - started, end - started, f"v{record.view.number} {primary}", primary
            )
        )
    return Chart(
        title="Client operations over the demo, faults marked, views beneath",
        x_label="seconds since the start of the demo",
        y_label="operations per second",
        series=[series],
        markers=markers,
        lane=lane,
        lane_title="primary",
        x_range=(0.0, duration_s),
        notes=[
            "red dashed: a fault expected to replace the primary; grey: other steps "
            "(restart, resume, heal); the lane shows each view and its primary"
        ],
    )
