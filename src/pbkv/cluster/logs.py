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
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

RAW_EVENT: Final = "output"
CATCH_UP_STEP_BYTES: Final = 1 << 20
"""How much of one file ``LogFollower.catch_up`` reads and parses at a time (bytes)."""
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
        parts = [stamp, self.source, f"view={self.view if self.view >= 0 else '-'}", self.event]
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
    """Seconds since the epoch of a ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` stamp (None if it is not
    one). ``fromisoformat``, not ``strptime``: this runs for every line read, and strptime
    was half the cost of reading a long log."""
    if not _TIMESTAMP.match(text):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
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
        if not kind and not event and key in ("server", "viewserver", "client", "node", "cluster"):
            kind, node = key, value
        elif key == "view" and view == -1 and not event and value.lstrip("-").isdigit():
            view = int(value)
        else:
            fields[key] = value
    if not event:
        return None
    return LogEvent(ts, source, node, kind, view, event, fields, text)


def events_after(path: Path, offset: int) -> Iterator[LogEvent]:
    """The lines of ``path`` after byte ``offset``, parsed (human and JSON alike); none when
    it cannot be read."""
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read()
    except OSError:
        return
    for line in data.decode("utf-8", "replace").splitlines():
        yield parse_line(line, "")


def logged(path: Path, offset: int, event: str, **fields: object) -> bool:
    """Whether ``path`` holds, after byte ``offset``, an ``event`` line with these fields
    (compared as text, so human and JSON lines alike): e.g. a restarted process's own
    ``listening pid=N``."""
    wanted = {key: str(value) for key, value in fields.items()}
    return any(
        found.event == event and all(str(found.fields.get(k)) == v for k, v in wanted.items())
        for found in events_after(path, offset)
    )


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


CAUSES: Final[dict[str, tuple[str, ...]]] = {
    "state_transfer_done": ("state_transfer_received",),
    "view_acknowledged": ("state_transfer_done", "state_transfer_received"),
    "view_learned": ("view_change",),
    "role_change": ("view_change",),
}
"""For an event of view N (key), the events of the same view N that cause it (values): the
backup's receipt of the last chunk precedes the primary's ``state_transfer_done``, which
precedes the view service's ``view_acknowledged``; a server learns a view (and changes role)
only after the view service made it."""


CAUSE_STEP_S: Final = 1e-6
"""How far after its cause an effect whose own stamp is earlier is placed (a tie breaker)."""


def causal_keys(streams: Sequence[Sequence[LogEvent]]) -> list[list[float]]:
    """A sort key per event that respects causes as well as each file's own order.

    Each event's key is its timestamp, raised to the key of its latest known cause (``CAUSES``)
    when the cause's line carries a later timestamp (clocks of different processes, or a line
    stamped when written rather than when decided), and never below the key of the line before
    it in the same file. Sorting by these keys (stably) never prints an effect before its cause.
    """
    latest: dict[tuple[str, int], float] = {}
    for stream in streams:
        for event in stream:
            if any(event.event in causes for causes in CAUSES.values()):
                slot = (event.event, event.view)
                latest[slot] = max(latest.get(slot, event.ts), event.ts)
    keys: list[list[float]] = [[] for _ in streams]
    for _ in range(len(CAUSES)):  # causes chain (at most len(CAUSES) deep): settle
        changed = False
        for index, stream in enumerate(streams):
            keys[index] = _stream_keys(stream, latest)
            for event, key in zip(stream, keys[index], strict=True):
                slot = (event.event, event.view)
                if slot in latest and key > latest[slot]:
                    latest[slot] = key
                    changed = True
        if not changed:
            break
    return keys


def _stream_keys(stream: Sequence[LogEvent], latest: dict[tuple[str, int], float]) -> list[float]:
    keys: list[float] = []
    floor = float("-inf")
    for event in stream:
        key = max(event.ts, floor)
        for cause in CAUSES.get(event.event, ()):
            if (cause, event.view) in latest:
                key = max(key, latest[(cause, event.view)] + CAUSE_STEP_S)
        keys.append(key)
        floor = key
    return keys


def merge(streams: Iterable[Sequence[LogEvent]]) -> list[LogEvent]:
    """One timeline ordered by a cause-respecting key (``causal_keys``): by time, except that no
    effect is printed before its cause and each file keeps its own order."""
    materialized = [list(stream) for stream in streams]
    keyed = [
        (key, event)
        for stream, keys in zip(materialized, causal_keys(materialized), strict=True)
        for key, event in zip(keys, stream, strict=True)
    ]
    keyed.sort(key=lambda pair: pair[0])
    return [event for _, event in keyed]


def timeline(logs: dict[str, Path]) -> list[LogEvent]:
    """The merged timeline of the named log files (``{source: path}``)."""
    return merge(read_log(path, source) for source, path in logs.items())


def window(events: Sequence[LogEvent], center: float, radius_s: float) -> list[LogEvent]:
    """The events within ``radius_s`` of ``center``."""
    return [event for event in events if abs(event.ts - center) <= radius_s]


class LogFollower:
    """Incremental reader of several log files: each ``poll`` returns the new complete lines,
    merged in time order.

    Args:
        logs: the files, by source name.
        from_start: read each file from its beginning (else from its size now).
        events: parse only the lines that name one of these events (a substring test per
            line: a reader that wants a few events of a long log skips the parse of the rest);
            None: every line.
    """

    def __init__(
        self,
        logs: dict[str, Path],
        from_start: bool = True,
        events: Collection[str] | None = None,
    ) -> None:
        self.logs = logs
        self.events = None if events is None else tuple(events)
        self.offsets: dict[str, int] = {}
        self.last_ts: dict[str, float] = {}
        self.partial: dict[str, bytes] = {}
        self.caught_up = True
        if not from_start:
            for source, path in logs.items():
                self.offsets[source] = path.stat().st_size if path.exists() else 0

    def poll(self, max_bytes: int | None = None) -> list[LogEvent]:
        """The complete lines appended since the last poll, merged in time order.

        Args:
            max_bytes: read at most this much of each file (None: to its end), so that a long
                backlog is taken in bounded steps; ``caught_up`` then says whether every file
                was read to its end.
        """
        self.caught_up = True
        if len(self.logs) == 1:  # one file keeps its own order: nothing to merge
            ((source, path),) = self.logs.items()
            return self._read_new(source, path, max_bytes)
        return merge(self._read_new(source, path, max_bytes) for source, path in self.logs.items())

    def catch_up(self, step_bytes: int = CATCH_UP_STEP_BYTES) -> Iterator[LogEvent]:
        """The complete lines the files held when called, read at most ``step_bytes`` of each
        file at a time (memory bounded however long the backlog). Lines appended meanwhile
        wait for the next call: a process that writes faster than we read cannot keep us here.
        """
        backlog = 0
        for source, path in self.logs.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = self.offsets.get(source, 0)
            backlog = max(backlog, size - offset if size >= offset else size)
        for _ in range(1 + backlog // step_bytes):
            yield from self.poll(step_bytes)
            if self.caught_up:
                return

    def _read_new(self, source: str, path: Path, max_bytes: int | None) -> list[LogEvent]:
        offset = self.offsets.get(source, 0)
        try:
            with open(path, "rb") as stream:
                stream.seek(0, 2)
                size = stream.tell()
                if size < offset:
                    offset = 0  # the file was truncated (a new cluster): start over
                stream.seek(offset)
                data = stream.read(-1 if max_bytes is None else max_bytes)
        except FileNotFoundError:
            return []
        if offset + len(data) < size:
            self.caught_up = False
        self.offsets[source] = offset + len(data)
        data = self.partial.pop(source, b"") + data
        complete, _, rest = data.rpartition(b"\n")
        if rest:
            self.partial[source] = rest
        if not complete:
            return []
        lines = complete.decode("utf-8", "replace").split("\n")
        if self.events is not None:
            wanted = self.events
            lines = [line for line in lines if any(name in line for name in wanted)]
        events = parse_lines(lines, source, self.last_ts.get(source, 0.0))
        if events:
            self.last_ts[source] = events[-1].ts
        return events


def iter_events(events: Iterable[LogEvent], names: Sequence[str]) -> Iterator[LogEvent]:
    """Only the events whose source or node is in ``names`` (all when ``names`` is empty)."""
    for event in events:
        if not names or event.source in names or event.node in names:
            yield event


# --- the cluster's own events (faults it injects) -----------------------------------------------

CLUSTER_SOURCE: Final = "cluster"
CLUSTER_LOG_NAME: Final = "cluster.log"


def cluster_event_line(ts: float, event: str, fields: dict[str, Any]) -> str:
    """One human event line of the cluster manager, parseable like a node's."""
    parts = [format_ts(ts), f"{CLUSTER_SOURCE}=pbkv", event]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
    return " ".join(parts)


def record_cluster_event(logs_directory: Path, event: str, ts: float, **fields: Any) -> None:
    """Append one event (a fault the cluster layer injected) to ``logs/cluster.log``, so it
    stands in the same timeline as the nodes' own lines. Never raises: a fault that could not
    be logged is still done."""
    try:
        logs_directory.mkdir(parents=True, exist_ok=True)
        with open(logs_directory / CLUSTER_LOG_NAME, "a", encoding="utf-8") as stream:
            stream.write(cluster_event_line(ts, event, fields) + "\n")
    except OSError:
        pass
