"""A downgrade with real processes: state written by another pbkv format version (a newer
release's ``PBKVWAL2`` segment or ``PBKVSNP2`` snapshot, a view file of version 2) makes
``pbkv server`` and ``pbkv viewserver`` refuse to start with one line naming the file and both
versions, ``--repair`` too, and leaves the file byte for byte as it was (recovery rule 6,
protocol.md D1 and V9). Before, the server called the segment a ``bad segment header``, and
with ``--repair`` deleted it (or quarantined the snapshot and deleted every segment) and
started empty; the view service said ``unknown version``, or ``corrupt`` for a newer layout.
The storage API's side is in tests/storage/test_format_version.py, etcd's in
tests/etcd/test_format_version.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from pbkv.core.durable import Snapshot
from pbkv.core.kv_store import Limits
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.persist import VIEW_FILE
from tests.storage.helpers import as_newer_release, contents

from .test_review_durability import primary_of_view_2
from .test_view_store import one_line_error, pbkv, save_raw

EXIT_FAILED = 5  # a server that refuses its data directory (docs/guide.md §10)
EXIT_USAGE = 2  # a view service that refuses its data directory


def with_snapshot(path: Path) -> None:
    """A server's directory holding a compaction snapshot (and the segments around it)."""
    primary_of_view_2(path, writes=2)
    logger = EventLogger("server", "s1", int, enabled=False)
    disk, _ = ReplicaDisk.open(StorageOptions(str(path)), Limits(), logger)
    mark = disk.log.begin_compaction()
    snapshot = Snapshot({"k0": "v", "k1": "v"}, (), 2, 2, 2, Limits())
    assert disk.log.finish_compaction(mark, msgspec.msgpack.encode(snapshot))
    disk.close()


def start_server(data: Path, repair: bool) -> subprocess.CompletedProcess[str]:
    """``pbkv server --data-dir data``; a start that is not refused runs until the timeout."""
    argv = [sys.executable, "-m", "pbkv", "server", "--listen", "127.0.0.1:0"]
    argv += ["--viewserver", "127.0.0.1:1", "--data-dir", str(data)]
    argv += ["--repair"] if repair else []
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("repair", [False, True], ids=["plain", "repair"])
@pytest.mark.parametrize("kind", ["log", "snapshot"])
def test_a_server_refuses_a_newer_file_and_leaves_the_directory_as_it_is(
    tmp_path: Path, kind: str, repair: bool
) -> None:
    if kind == "log":
        primary_of_view_2(tmp_path)
        (newer,) = sorted(tmp_path.glob("wal-*.log"))
        as_newer_release(newer, b"PBKVWAL2")
    else:
        with_snapshot(tmp_path)
        (newer,) = sorted(tmp_path.glob("snap-*.snap"))
        as_newer_release(newer, b"PBKVSNP2")
    before = contents(tmp_path)
    refused = start_server(tmp_path, repair)
    written = "written by another pbkv format version (2; this release reads 1)"
    one_line_error(refused, EXIT_FAILED, f"{kind} {newer} was {written}")
    assert contents(tmp_path) == before  # no cut, no *.corrupt, no REPAIRED, nothing deleted


NEWER_LAYOUT = b'{"version":2,"view":{"number":3,"primary":"127.0.0.1:1"},"acknowledged":true}'


@pytest.mark.parametrize("layout", ["same", "newer"])
def test_a_view_service_refuses_a_view_file_of_another_version(tmp_path: Path, layout: str) -> None:
    save_raw(tmp_path, version=2)
    if layout == "newer":  # no "number" at the top: before, a "corrupt view file"
        (tmp_path / VIEW_FILE).write_bytes(NEWER_LAYOUT)
    before = contents(tmp_path)
    result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    one_line_error(
        result,
        EXIT_USAGE,
        f"view file '{tmp_path / VIEW_FILE}' was written by another pbkv format version "
        "(2; this release reads 1)",
    )
    assert contents(tmp_path) == before
