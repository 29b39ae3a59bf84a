"""The guide's walk-through holds together when typed in order.

A reader types the ``sh`` blocks of docs/guide.md from §1 on, one after the other. This follows
them with a model of what they do to the data (which keys each cluster holds, which cluster
runs, what a durable one keeps across ``down``) and checks each read against it: a ``get`` or
``probe`` whose comment shows a value finds that value, ``not found`` a missing key; an ``up``
never meets a running cluster. The guide's §2 deleted ``greeting`` that §3, §5 and §7 read;
§4b replaced the cluster §5 went on with; §10 and §10b started clusters over running ones.
Nothing is run: the model knows only what the commands do to data, not which server serves.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
FIRST, LAST = "## 1. ", "## 11. "
"""The walk-through: from "Set up" to the sections of reference tables."""
SEPARATOR = re.compile(r"\s*(?:;|&&)\s*")
FAILS = re.compile(r"pbkv: error|exit [1-9]|wrong_server")
"""A comment that says the command fails: it changes and reads nothing."""
PROBE_OK = re.compile(r"ok: '([^']*)'")


@dataclass
class Cluster:
    running: bool = False
    durable: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] | None = None  # a durable cluster's keys after `down`


def walkthrough() -> list[tuple[int, str, str]]:
    """(line number, command, its comment) for each command of the ``sh`` blocks of §1-§10b."""
    lines = GUIDE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(FIRST))
    end = next(i for i, line in enumerate(lines) if line.startswith(LAST))
    commands, in_sh, continued = [], False, ""
    for number, line in enumerate(lines[start:end], start=start + 1):
        if line.startswith("```"):
            in_sh = line.strip() == "```sh" and not in_sh
            continue
        if not in_sh or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            continued += line[:-1]
            continue
        text, _, comment = (continued + line).partition("  #")
        continued = ""
        for command in SEPARATOR.split(text.strip()):
            if command:
                commands.append((number, command, comment.strip()))
    return commands


class Reader:
    """What the commands typed so far left: the clusters by directory, the current one."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}
        self.directory = ".pbkv"

    @property
    def cluster(self) -> Cluster:
        return self.clusters.setdefault(self.directory, Cluster())

    def type(self, words: list[str], comment: str) -> None:
        match words:
            case ["export", setting] if setting.startswith("PBKV_CLUSTER_DIR="):
                self.directory = setting.partition("=")[2]
            case ["unset", "PBKV_CLUSTER_DIR"]:
                self.directory = ".pbkv"
            case ["pbkv", "cluster", "up", *options]:
                self.up(options)
            case ["pbkv", "cluster", "down", *_]:
                cluster = self.cluster
                cluster.running = False
                cluster.kept = dict(cluster.keys) if cluster.durable else None
            case ["pbkv", "cluster", "probe", _, key, *_] if found := PROBE_OK.search(comment):
                assert self.cluster.keys.get(key) == found[1], f"probe {key}: {self.cluster.keys}"
            case ["pbkv", command, key, *rest] if not FAILS.search(comment):
                self.client(command, key, rest, comment)

    def up(self, options: list[str]) -> None:
        cluster = self.cluster
        assert not cluster.running, f"`up` while a cluster runs in {self.directory}"
        if "--resume" in options:
            assert cluster.kept is not None, "nothing to resume"
            cluster.keys, cluster.running = dict(cluster.kept), True
            return
        assert cluster.kept is None or "--fresh" in options, "`up` over a durable cluster's data"
        self.clusters[self.directory] = Cluster(True, "--durable" in options)

    def client(self, command: str, key: str, rest: list[str], comment: str) -> None:
        keys = self.cluster.keys
        value = rest[0] if rest and not rest[0].startswith("--") else ""
        if command in ("put", "set"):
            keys[key] = value
        elif command == "append":
            keys[key] = keys.get(key, "") + value
        elif command == "delete":
            keys.pop(key, None)
        elif command == "get" and "not found" in comment:
            assert key not in keys, f"get {key}: shown missing, holds {keys[key]!r}"
        elif command == "get" and comment:
            assert key in keys, f"get {key}: a value is shown, the key is gone ({keys})"
            assert comment.startswith(keys[key]), (
                f"get {key}: shown {comment!r}, holds {keys[key]!r}"
            )


def test_every_read_of_the_walkthrough_finds_what_its_comment_shows() -> None:
    reader = Reader()
    commands = walkthrough()
    assert len(commands) > 50  # the blocks were found
    for number, command, comment in commands:
        try:
            reader.type(shlex.split(command), comment)
        except AssertionError as error:
            pytest.fail(f"docs/guide.md:{number}: {command}: {error}")


def test_the_first_table_says_what_differs_on_the_readers_machine() -> None:
    """The samples keep one run's pids and cluster id; a reader who compares them with their
    own must be told, where the first table appears, that those differ."""
    text = GUIDE.read_text()
    first_table = text.index("PID    ROLE")
    note = text[first_table : text.index("\n\n", text.index("```\n", first_table) + 5)]
    assert re.search(r"pids\b.*cluster id.*differ on your\s+machine", note, re.DOTALL), note
