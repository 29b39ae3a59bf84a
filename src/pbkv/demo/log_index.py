"""What the demo asks of the processes' logs, answered from what was appended since it last
asked.

Theory of operation: scenario code asks, after a fault, what a process logged: how the backup of
a view got the state (the primary's ``catch_up_done`` or ``state_transfer_done`` line for that
view), what a restarted server recovered from its disk (``storage_recovered``), and it waits for
such a line while the process starts. Parsing the whole log for each question, and again at
every poll of a wait, costs the log's size each time: quadratic in it over a long run. Here each
process's log is followed (``pbkv.cluster.logs.LogFollower``): a question first reads what was
appended since the previous one, in steps of at most ``READ_STEP_BYTES``, into two bounded
tables per log: the newest line of each event name, and the newest line of each event name in
each of the last ``VIEWS_KEPT`` views the log names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pbkv.cluster.logs import LogEvent, LogFollower

READ_STEP_BYTES: Final = 1 << 20
"""How much of one log is read and parsed at a time while catching up (bytes)."""
VIEWS_KEPT: Final = 64
"""How many views (the highest numbers a log named) keep their newest line per event name."""


@dataclass(slots=True)
class _Newest:
    """One log's follower and the newest lines it read so far."""

    follower: LogFollower
    by_name: dict[str, LogEvent] = field(default_factory=dict)
    by_view: dict[int, dict[str, LogEvent]] = field(default_factory=dict)

    @property
    def read_to(self) -> int:
        """How far the log was read (bytes)."""
        return sum(self.follower.offsets.values())

    def add(self, event: LogEvent) -> None:
        self.by_name[event.event] = event
        if event.view < 0:
            return
        in_view = self.by_view.setdefault(event.view, {})
        in_view.pop(event.event, None)  # inserted again: the dict's order is the log's order
        in_view[event.event] = event
        if len(self.by_view) > VIEWS_KEPT:
            del self.by_view[min(self.by_view)]


class LogIndex:
    """The newest lines of each process's log (keyed by the process's name); see the module
    docstring. Not thread-safe: the scenario thread asks."""

    def __init__(self) -> None:
        self._logs: dict[str, _Newest] = {}

    def newest(self, source: str, log: Path, name: str) -> LogEvent | None:
        """The newest ``name`` line of ``log`` (written by process ``source``), if any."""
        return self._caught_up(source, log).by_name.get(name)

    def newest_in_view(
        self, source: str, log: Path, view: int, names: tuple[str, ...]
    ) -> LogEvent | None:
        """The newest line of ``log`` tagged with ``view`` whose event is one of ``names``
        (None too when ``view`` is not among the ``VIEWS_KEPT`` highest the log named)."""
        found = None
        for name, event in self._caught_up(source, log).by_view.get(view, {}).items():
            if name in names:
                found = event
        return found

    def _caught_up(self, source: str, log: Path) -> _Newest:
        """The tables of ``log``, after reading what it held when asked (not what it gains
        meanwhile: a process that writes faster than we read cannot keep us here)."""
        try:
            size = log.stat().st_size
        except OSError:
            size = 0
        newest = self._logs.get(source)
        if newest is None or newest.follower.logs[source] != log or size < newest.read_to:
            newest = self._logs[source] = _Newest(LogFollower({source: log}))  # new or truncated
        for event in newest.follower.catch_up(READ_STEP_BYTES):
            newest.add(event)
        return newest
