"""The view service's data directory (issue #9 item 6, issue #8 finding 3, runtime side):
probed and locked at start, saved views validated, one-line errors, state kept by default."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from pbkv.core.effects import PersistView
from pbkv.core.messages import Ping, View
from pbkv.runtime.config import ConfigError, NodeOptions
from pbkv.runtime.persist import LOCK_FILE, VIEW_FILE, ViewStore, default_data_dir
from pbkv.wire import MESSAGES
from tests import authed
from tests.conftest import free_port

from .inprocess import FAST, start_node


def pbkv(
    *args: str, cwd: Path | None = None, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pbkv", *args]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbkv: error: "), result.stderr
    assert text in lines[0], lines[0]


def save_raw(directory: Path, **fields: object) -> None:
    record: dict[str, object] = {
        "version": 1,
        "number": 3,
        "primary": "127.0.0.1:1",
        "backups": ["127.0.0.1:2"],
    }
    record |= {"acknowledged": True, "incarnations": []}
    record |= fields
    directory.mkdir(parents=True, exist_ok=True)
    (directory / VIEW_FILE).write_bytes(msgspec.json.encode(record))


BAD_VIEWS: dict[str, tuple[dict[str, object], str]] = {
    "negative number": ({"number": -5}, "view number -5"),
    "number over 2**63": ({"number": 2**64}, "view number"),
    "no primary": ({"primary": None}, "primary if and only if"),
    "primary in view 0": ({"number": 0, "backups": []}, "primary if and only if"),
    "primary is backup": ({"backups": ["127.0.0.1:1"]}, "is also a backup"),
    "duplicate backups": ({"backups": ["127.0.0.1:2", "127.0.0.1:2"]}, "appears twice"),
    "long name": ({"primary": "x" * 300}, "server name of 300 bytes"),
    "name not a string": ({"primary": 7}, "Expected `str | null`"),
    "carried not a backup": ({"carried": ["127.0.0.1:9"]}, "carried backup is not a backup"),
    "carried twice": (
        {"backups": ["127.0.0.1:2", "127.0.0.1:3"], "carried": ["127.0.0.1:2"] * 2},
        "appears twice",
    ),
    "cluster id over 2**63": ({"cluster_id": 2**63}, "cluster id"),
    "negative cluster id": ({"cluster_id": -1}, "cluster id"),
}


@pytest.mark.parametrize("case", sorted(BAD_VIEWS))
def test_an_impossible_saved_view_is_a_corrupt_view_file(tmp_path: Path, case: str) -> None:
    fields, reason = BAD_VIEWS[case]
    save_raw(tmp_path, **fields)
    with pytest.raises(ConfigError, match="corrupt view file") as error:
        ViewStore(tmp_path).load()
    assert reason in str(error.value)


def test_a_sound_saved_view_is_restored(tmp_path: Path) -> None:
    save_raw(tmp_path, incarnations=[["127.0.0.1:1", 5]])
    state = ViewStore(tmp_path).load()
    assert state == PersistView(
        View(3, "127.0.0.1:1", ("127.0.0.1:2",)), True, (("127.0.0.1:1", 5),)
    )


def test_the_backups_carried_complete_survive_a_save_and_a_load(tmp_path: Path) -> None:
    """V14 across a restart of the view service; a file written before the field loads with
    none carried (the test above)."""
    view = View(4, "127.0.0.1:1", ("127.0.0.1:2", "127.0.0.1:3"))
    state = PersistView(view, False, (("127.0.0.1:3", 9),), ("127.0.0.1:3",), cluster_id=2**63 - 1)
    store = ViewStore(tmp_path)
    store.save(state)
    store.close()
    assert ViewStore(tmp_path).load() == state


def test_a_directory_where_the_temporary_file_goes_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "view.tmp").mkdir()
    result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    one_line_error(result, 2, "cannot write in data directory")


def test_a_full_disk_is_refused_at_start(tmp_path: Path) -> None:
    os.symlink("/dev/full", tmp_path / "view.tmp")  # every write there fails with ENOSPC
    result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    one_line_error(result, 2, "No space left on device")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_directory_is_refused_at_start(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    finally:
        tmp_path.chmod(0o755)
    one_line_error(result, 2, "data directory")


def test_a_corrupt_view_file_stops_the_view_service_with_one_line(tmp_path: Path) -> None:
    save_raw(tmp_path, number=-5)
    result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path))
    one_line_error(result, 2, f"corrupt view file '{tmp_path / VIEW_FILE}': view number -5")


def test_the_view_is_kept_in_the_current_directory_by_default_and_locked(tmp_path: Path) -> None:
    port = free_port()
    listen = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "pbkv", "viewserver", "--listen", listen]
    first = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        lines = [first.stderr.readline() for _ in range(2)]
        assert any(" listening " in line for line in lines), lines
        data_dir = tmp_path / default_data_dir("127.0.0.1", port)
        assert data_dir.name == f"pbkv-viewserver-127.0.0.1-{port}.data"
        assert (data_dir / LOCK_FILE).exists()
        second = pbkv("viewserver", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir))
        one_line_error(second, 2, "in use by another view service")
        same = pbkv("viewserver", "--listen", listen, cwd=tmp_path)
        one_line_error(same, 2, "in use by another view service")
    finally:
        first.terminate()
        first.wait(10)


def test_data_dir_and_no_data_dir_exclude_each_other(tmp_path: Path) -> None:
    result = pbkv("viewserver", "--listen", "127.0.0.1:0", "--no-data-dir", "--data-dir", "x")
    one_line_error(result, 2, "exclude each other")


def test_a_failing_save_is_one_persist_failed_line_and_exit_70(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> int:
        store = ViewStore(tmp_path)
        viewserver = await start_node("viewserver", NodeOptions("127.0.0.1:0", FAST), store=store)
        store.temporary.mkdir()  # the disk goes bad after the start
        _, writer = await authed.open_connection(viewserver.name)
        async with asyncio.timeout(5.0):
            while not viewserver.task.done():  # a server pings until it is given a view
                with contextlib.suppress(OSError):
                    writer.write(MESSAGES.frame(Ping("127.0.0.1:9", 0, 1)))
                await asyncio.sleep(0.01)
        writer.close()
        return await viewserver.task

    started = time.monotonic()
    assert asyncio.run(main()) == 70
    assert time.monotonic() - started < 5.0
    errors = capsys.readouterr().err
    lines = [line for line in errors.splitlines() if "persist_failed" in line]
    assert len(lines) == 1 and "view.tmp" in lines[0], errors
    assert "Traceback" not in errors
