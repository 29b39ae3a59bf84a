"""The log lines the documentation shows are lines pbkv prints.

A reader compares the guide's samples with what `pbkv cluster logs` prints, and the README's
with what a node writes to stderr: a sample must have their exact shape (the full UTC date and
time, the process, ``view=N``, an event the code logs, ``key=value`` fields quoted as the
renderer quotes them), so that it can be found and read the same way. The guide's samples had
drifted to ``19:48:04.525Z s1 ...`` (no date) and ``... s1 ...``, which no command prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from pbkv.cluster.logs import RAW_EVENT, parse_line, parse_ts

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*```")
CLUSTER_LOGS_LINE = re.compile(r"^(\S+) (viewserver|vs\d+|s\d+|etcd\d+|cluster) (view=\S+ .*)$")
"""A `pbkv cluster logs` line: stamp, process, then what the process's own line says."""
NODE_LINE = re.compile(r"^(\S+) ((?:viewserver|server)=\S+ view=\S+ .*)$")
"""A line of a node's own log (stderr, or DIR/logs/NAME.log): stamp, kind=address, view."""
LOOKS_LIKE_A_LOG_LINE = re.compile(r"^\S+ \S+ view=")


def sample_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a fenced block that looks like a log line."""
    in_block = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            in_block = not in_block
        elif in_block and LOOKS_LIKE_A_LOG_LINE.match(line):
            yield number, line


@cache
def logged_events() -> frozenset[str]:
    """Every quoted identifier in the source: the events the code can log are among them."""
    words: set[str] = set()
    for path in (ROOT / "src" / "pbkv").rglob("*.py"):
        words.update(re.findall(r"\"([a-z][a-z0-9_]*)\"", path.read_text()))
    return frozenset(words)


def problems(line: str) -> list[str]:
    """Why ``line`` is not a line `pbkv cluster logs` or a node prints ([] when it is)."""
    cluster = CLUSTER_LOGS_LINE.match(line)
    shape = cluster or NODE_LINE.match(line)
    if shape is None:
        return ["neither `TIME PROCESS view=N EVENT ...` nor `TIME KIND=ADDRESS view=N EVENT`"]
    stamp = shape.group(1)
    if parse_ts(stamp) is None:
        return [f"{stamp!r} is not the full UTC stamp both print (YYYY-MM-DDTHH:MM:SS.mmmZ)"]
    if cluster is not None:
        source, rest = cluster.group(2), cluster.group(3)
        view, _, tail = rest.partition(" ")
        own = view if view != "view=-" else ""  # a line of the cluster layer: no view
        event = parse_line(f"{stamp} node=x {own} {tail}", source)
        found = [] if event.render() == line else [f"printed as: {event.render()}"]
    else:
        event = parse_line(line, "")
        found = []
    if event.event == RAW_EVENT or event.event not in logged_events():
        found.append(f"no code logs the event {event.event!r}")
    return found


DOCUMENTS = (ROOT / "docs" / "guide.md", ROOT / "README.md")


@pytest.mark.parametrize("document", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_every_log_sample_is_a_line_pbkv_prints(document: Path) -> None:
    wrong = [
        f"{document.name}:{number}: {why}: {line[:80]}"
        for number, line in sample_lines(document)
        for why in problems(line)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (
            "2026-12-02T03:22:03.494Z viewserver view=2 server_declared_dead server=127.0.0.1:7002",
            True,
        ),
        ("19:48:04.525Z viewserver view=2 server_declared_dead server=127.0.0.1:7002", False),
        ("... s1 view=2 state_transfer_done backup=127.0.0.1:7002 bytes=0 chunks=1 keys=0", False),
        ('2026-12-02T03:22:16.537Z s3 view=4 client_refused reason="wrong server" detail=""', True),
        ("2026-12-02T03:22:16.537Z s3 view=4 client_refused reason=wrong server", False),
        ("2026-12-02T03:22:16.537Z s3 view=4 no_such_event_anywhere", False),
        ("2026-12-02T03:22:03.001Z cluster view=- cluster_kill target=s2 signal=KILL", True),
        ("2026-12-02T03:21:51.218Z viewserver=127.0.0.1:7000 view=1 view_acknowledged", True),
        ("...Z viewserver=127.0.0.1:7000 view=1 view_acknowledged primary=127.0.0.1:7001", False),
    ],
)
def test_the_check_tells_a_printed_line_from_a_drifted_one(line: str, ok: bool) -> None:
    assert (problems(line) == []) is ok, problems(line)
