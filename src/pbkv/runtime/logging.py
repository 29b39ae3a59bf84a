"""Event log lines: one line per event that matters, tagged with the node's name and view number.

Human format::

    2026-11-21T19:30:01.123Z server=127.0.0.1:7001 view=3 view_change primary=... backup=...

JSON format (``--log-format json``): one object per line with ``ts``, ``node``, ``view``,
``event`` and the event's own fields. Lines go to stderr; a cluster manager redirects them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import msgspec

LOG_FORMATS: Final = ("human", "json")
RATE_LIMIT_KEYS_MAX: Final = 1024


def timestamp(now: float) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch == '"' for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


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
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def event(self, event: str, view_number: int | None = None, **fields: Any) -> None:
        """Write one line for ``event``; ``view_number`` defaults to the node's current view."""
        self.write(event, self.view_number() if view_number is None else view_number, fields)

    def write(self, event: str, view_number: int, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
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

    def limited(self, key: str, interval_s: float, event: str, **fields: Any) -> None:
        """Like ``event``, at most once per ``interval_s`` per ``key``; the line written after a
        quiet period says how many were suppressed."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) >= RATE_LIMIT_KEYS_MAX and key not in self._last:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        self.event(event, **fields)

    def exception(self, event: str, error: BaseException, **fields: Any) -> None:
        """An event with a traceback (for bugs: an exception escaping a core handler)."""
        import traceback

        text = "".join(traceback.format_exception(error)).rstrip()
        self.event(event, error=repr(error), traceback=text, **fields)
