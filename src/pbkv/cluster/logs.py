"""Reading the processes' event logs back: parse, merge into one timeline, follow.

Theory of operation: every process writes one line per event (``pbkv.runtime.logging``), either
human::

    2026-11-21T19:30:01.123Z server=127.0.0.1:7001 view=3 view_change primary=a backup=b

or JSON (``{"ts": ..., "node": ..., "kind": ..., "view": ..., "event": ..., ...}``). Both parse
into the same ``LogEvent``. Anything else in a log file (a traceback, a start-up error) is kept
as an ``output`` event stamped with the time of the line before it, so it lands at the right
place in the timeline. The merged timeline is a stable sort of all files by timestamp; following
re-reads each file from the offset where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

RAW_EVENT: Final = "output"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$")
_TOKEN = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)|(\S+)')


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event line.

    Attributes:
        ts: wall-clock seconds since the epoch (UTC).
        source: the manager's name of the process whose log holds the line (``s1`` ...).
        node: the node's own name (its address), ``""`` if the line did not say.
        kind: ``viewserver``, ``server`` or ``""``.
        view: the view number the line was tagged with (-1 if none).
        event: the event name (``view_change`` ...), or ``output`` for a line that is not an
            event line.
        fields: the event's own ``key=value`` fields, as strings for human lines.
        raw: the line as written.
    """

    ts: float
    source: str
    node: str
    kind: str
    view: int
    event: str
    fields: dict[str, Any] = field(default_factory=dict)
    raw: str = ""

    def render(self, with_date: bool = True) -> str:
        """``TIME SOURCE view=N event k=v ...`` (one line, stable: scripts may parse it)."""
        stamp = format_ts(self.ts) if with_date else format_ts(self.ts)[11:23]
        if self.event == RAW_EVENT:
            return f"{stamp} {self.source} | {self.raw}"
        parts = [stamp, self.source, f"view={self.view}", self.event]
        parts += [f"{key}={_quote(value)}" for key, value in self.fields.items()]
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": format_ts(self.ts),
            "source": self.source,
            "node": self.node,
            "kind": self.kind,
            "view": self.view,
            "event": self.event,
            "fields": self.fields,
        }


def format_ts(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> float | None:
    if not _TIMESTAMP.match(text):
        return None
    try:
        return datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    except ValueError:
        try:
            return datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch == '"' for ch in text):
        return json.dumps(text)
    return text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        body = text[1:-1]
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), body)
    return text


def parse_line(line: str, source: str, previous_ts: float = 0.0) -> LogEvent:
    """Parse one log line (human or JSON); a line that is neither becomes an ``output`` event
    stamped ``previous_ts``."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        event = _parse_json(text, source)
        if event is not None:
            return event
    event = _parse_human(text, source)
    if event is not None:
        return event
    return LogEvent(previous_ts, source, "", "", -1, RAW_EVENT, {}, text)


def _parse_json(text: str, source: str) -> LogEvent | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or "event" not in record or "ts" not in record:
        return None
    ts = parse_ts(str(record.get("ts")))
    if ts is None:
        return None
    reserved = {"ts", "node", "kind", "view", "event"}
    fields = {k: v for k, v in record.items() if k not in reserved}
    view = record.get("view")
    return LogEvent(
        ts=ts,
        source=source,
        node=str(record.get("node", "")),
        kind=str(record.get("kind", "")),
        view=view if isinstance(view, int) else -1,
        event=str(record["event"]),
        fields=fields,
        raw=text,
    )


def _parse_human(text: str, source: str) -> LogEvent | None:
    head, _, rest = text.partition(" ")
    ts = parse_ts(head)
    if ts is None:
        return None
    kind = node = event = ""
    view = -1
    fields: dict[str, Any] = {}
    for match in _TOKEN.finditer(rest):
        key, value, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            if not event:
                event = bare
            continue
        value = _unquote(value)
        if not kind and not event and key in ("server", "viewserver", "client", "node"):
            kind, node = key, value
        elif key == "view" and view == -1 and not event and value.lstrip("-").isdigit():
            view = int(value)
        else:
            fields[key] = value
    if not event:
        return None
    return LogEvent(ts, source, node, kind, view, event, fields, text)


def parse_lines(lines: Iterable[str], source: str, previous_ts: float = 0.0) -> list[LogEvent]:
    events: list[LogEvent] = []
    last = previous_ts
    for line in lines:
        if not line.strip():
            continue
        event = parse_line(line, source, last)
        last = event.ts
        events.append(event)
    return events


def read_log(path: Path, source: str) -> list[LogEvent]:
    """Every event in one log file (empty if the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return parse_lines(text.splitlines(), source)


def merge(streams: Iterable[Sequence[LogEvent]]) -> list[LogEvent]:
    """One timeline: all events ordered by time (stable, so each file keeps its own order)."""
    events = [event for stream in streams for event in stream]
    events.sort(key=lambda event: event.ts)
    return events


def timeline(logs: dict[str, Path]) -> list[LogEvent]:
    """The merged timeline of the named log files (``{source: path}``)."""
    return merge(read_log(path, source) for source, path in logs.items())


def window(events: Sequence[LogEvent], center: float, radius_s: float) -> list[LogEvent]:
    """The events within ``radius_s`` of ``center``."""
    return [event for event in events if abs(event.ts - center) <= radius_s]


class LogFollower:
    """Incremental reader of several log files: each ``poll`` returns the new complete lines,
    merged in time order."""

    def __init__(self, logs: dict[str, Path], from_start: bool = True) -> None:
        self.logs = logs
        self.offsets: dict[str, int] = {}
        self.last_ts: dict[str, float] = {}
        self.partial: dict[str, bytes] = {}
        if not from_start:
            for source, path in logs.items():
                self.offsets[source] = path.stat().st_size if path.exists() else 0

    def poll(self) -> list[LogEvent]:
        return merge(self._read_new(source, path) for source, path in self.logs.items())

    def _read_new(self, source: str, path: Path) -> list[LogEvent]:
        offset = self.offsets.get(source, 0)
        try:
            with open(path, "rb") as stream:
                stream.seek(0, 2)
                size = stream.tell()
                if size < offset:
                    offset = 0  # the file was truncated (a new cluster): start over
                stream.seek(offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        self.offsets[source] = offset + len(data)
        data = self.partial.pop(source, b"") + data
        complete, _, rest = data.rpartition(b"\n")
        if rest:
            self.partial[source] = rest
        if not complete:
            return []
        events = parse_lines(
            complete.decode("utf-8", "replace").split("\n"),
            source,
            self.last_ts.get(source, 0.0),
        )
        if events:
            self.last_ts[source] = events[-1].ts
        return events


def iter_events(events: Iterable[LogEvent], names: Sequence[str]) -> Iterator[LogEvent]:
    """Only the events whose source or node is in ``names`` (all when ``names`` is empty)."""
    for event in events:
        if not names or event.source in names or event.node in names:
            yield event
