"""Event log lines: one line per event that matters, tagged with the node's name and view number.

Human format::

    2026-11-21T19:30:01.123Z server=127.0.0.1:7001 view=3 view_change primary=... backup=...

JSON format (``--log-format json``): one object per line with ``ts``, ``node``, ``view``,
``event`` and the event's own fields. Lines go to stderr; a cluster manager redirects them.

Floods are rate-limited, so no input can fill a disk with log lines: every event name may write
at most ``EVENT_LINES_PER_S`` lines per second, and ``limited`` events at most one line per
interval per key (a key such as ``connection_closed:<ip>``). What is held back is counted: the
next line let through for that key carries ``suppressed=N``, and ``report_suppressed`` (called
by the host about every second) writes a ``log_suppressed event=E suppressed=N`` line for any
count still unreported once its interval is over.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import msgspec

LOG_FORMATS: Final = ("human", "json")
RATE_LIMIT_KEYS_MAX: Final = 1024
EVENT_LINES_PER_S: Final = 20


def timestamp(now: float) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch == '"' for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


@dataclass(slots=True)
class _Budget:
    """Lines written for one rate-limit key in its current interval, and what was held back."""

    event: str
    interval_s: float
    start: float
    lines: int = 1
    suppressed: int = 0


class EventLogger:
    """Writes event lines for one node. ``view_number`` is read at each line."""

    def __init__(
        self,
        kind: str,
        name: str,
        view_number: Callable[[], int],
        log_format: str = "human",
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {log_format!r}")
        self.kind = kind
        self.name = name
        self.view_number = view_number
        self.json = log_format == "json"
        self.stream = stream
        self.enabled = enabled
        self._encoder = msgspec.json.Encoder(enc_hook=str)
        self._budgets: dict[str, _Budget] = {}

    def event(self, event: str, view_number: int | None = None, **fields: Any) -> None:
        """Write one line for ``event``; ``view_number`` defaults to the node's current view."""
        self.write(event, self.view_number() if view_number is None else view_number, fields)

    def write(self, event: str, view_number: int, fields: dict[str, Any]) -> None:
        """One line, unless ``event`` already wrote ``EVENT_LINES_PER_S`` this second."""
        if not self.enabled:
            return
        suppressed = self._admit(event, event, 1.0, EVENT_LINES_PER_S)
        if suppressed is None:
            return
        if suppressed:
            fields = fields | {"suppressed": suppressed}
        self._line(event, view_number, fields)

    def limited(self, key: str, interval_s: float, event: str, **fields: Any) -> bool:
        """Like ``event``, at most once per ``interval_s`` per ``key``; the line written after a
        quiet period says how many were suppressed. True when the line was written."""
        if not self.enabled:
            return False
        suppressed = self._admit(key, event, interval_s, 1)
        if suppressed is None:
            return False
        if suppressed:
            fields["suppressed"] = suppressed
        self._line(event, self.view_number(), fields)
        return True

    def report_suppressed(self) -> None:
        """A ``log_suppressed`` line for every count whose interval is over (see module doc)."""
        now = time.monotonic()
        for budget in self._budgets.values():
            if budget.suppressed and now - budget.start >= budget.interval_s:
                count, budget.suppressed = budget.suppressed, 0
                fields = {"event": budget.event, "suppressed": count}
                self._line("log_suppressed", self.view_number(), fields)

    def _admit(self, key: str, event: str, interval_s: float, lines_max: int) -> int | None:
        """None to hold the line back, else the count held back before it."""
        now = time.monotonic()
        budget = self._budgets.get(key)
        if budget is None:
            if len(self._budgets) >= RATE_LIMIT_KEYS_MAX:
                self.report_suppressed()
                self._budgets.clear()
            self._budgets[key] = _Budget(event, interval_s, now)
            return 0
        if now - budget.start >= interval_s:
            count = budget.suppressed
            budget.start, budget.lines, budget.suppressed = now, 1, 0
            return count
        if budget.lines < lines_max:
            budget.lines += 1
            return 0
        budget.suppressed += 1
        return None

    def _line(self, event: str, view_number: int, fields: dict[str, Any]) -> None:
        now = time.time()
        if self.json:
            record: dict[str, Any] = {"ts": timestamp(now), "node": self.name, "kind": self.kind}
            record |= {"view": view_number, "event": event}
            record |= {key: value for key, value in fields.items() if key not in record}
            line = self._encoder.encode(record).decode()
        else:
            parts = [timestamp(now), f"{self.kind}={self.name}", f"view={view_number}", event]
            parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
            line = " ".join(parts)
        stream = self.stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone (closed pipe): logging must never take the node down

    def exception(self, event: str, error: BaseException, **fields: Any) -> None:
        """An event with a traceback (for bugs: an exception escaping a core handler)."""
        import traceback

        text = "".join(traceback.format_exception(error)).rstrip()
        self.event(event, error=repr(error), traceback=text, **fields)
