"""A pid the cluster recorded that now runs another program is never signalled (mutation audit:
``kill``, ``resume``, ``restart`` and ``down`` asked the operating system about the pid alone, or
compared only the start of the command line, and every suite still passed). The stand-in is
another cluster's process: the same interpreter and script, another ``--listen``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pbkv.cluster import manager, processes, reloads, startup
from pbkv.cluster.state import ClusterState, ProcessRecord, save_state
from pbkv.cluster.targets import ClusterError

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)", "--listen")


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """Another cluster's process, holding the pid our record names."""
    process = subprocess.Popen([*SLEEPER, "127.0.0.1:7002"])
    deadline = time.monotonic() + 5.0
    while processes.process_state(process.pid, (*SLEEPER, "127.0.0.1:7002")) != "alive":
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def _ours(directory: Path, pid: int) -> tuple[ClusterState, ProcessRecord]:
    """A cluster whose s1 was started as ``... --listen 127.0.0.1:7001`` with ``pid``."""
    record = ProcessRecord(
        "s1", "server", "primary", "127.0.0.1:7001", pid, 0, 0,
        str(directory / "logs" / "s1.log"), (*SLEEPER, "127.0.0.1:7001"), 1.0,
    )  # fmt: skip
    state = ClusterState(directory, "127.0.0.1:7000", 0.1, 5, 0, 1.0, (record,))
    save_state(state)
    return state, record


def _letter(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


def test_a_reused_pid_counts_as_dead(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    _, record = _ours(tmp_path, stranger.pid)
    assert processes.process_state(stranger.pid, record.argv) == "dead"
    assert processes.process_state(stranger.pid, stranger.args) == "alive"  # type: ignore[arg-type]


def test_kill_and_down_leave_a_reused_pid_alone(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    state, record = _ours(tmp_path, stranger.pid)
    with pytest.raises(ClusterError, match=r"s1 \(pid \d+\) is not running"):
        manager.kill(state, record, "KILL")
    assert manager.down(tmp_path) == []
    time.sleep(0.1)
    assert stranger.poll() is None


def test_resume_does_not_continue_a_reused_pid(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    state, record = _ours(tmp_path, stranger.pid)
    stranger.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5.0
    while _letter(stranger.pid) not in "Tt":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(ClusterError, match="is not running; use restart"):
        manager.resume(record, state)
    time.sleep(0.1)
    assert _letter(stranger.pid) in "Tt"  # still paused: no SIGCONT reached it
    stranger.send_signal(signal.SIGCONT)


def test_restart_does_not_stop_a_reused_pid(
    tmp_path: Path, stranger: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, record = _ours(tmp_path, stranger.pid)
    monkeypatch.setattr(manager, "_start", lambda record: replace(record, pid=0))
    monkeypatch.setattr(startup, "wait_restarted", lambda *args: None)
    _, started = manager.restart(state, record)
    assert started.restarts == 1
    time.sleep(0.1)
    assert stranger.poll() is None


def test_sighup_goes_only_to_a_process_that_catches_it(tmp_path: Path) -> None:
    """``reloads.reload_running`` asks ``/proc`` whether a process handles SIGHUP before
    sending it: to one that does not (a release before reloads, a process with nothing to
    reload) it would be the end. The stand-in without a handler outlives the reload; the one
    with a handler gets the signal."""
    marker = tmp_path / "hup"
    catcher_code = (
        "import pathlib, signal, time\n"
        f"signal.signal(signal.SIGHUP, lambda *_: pathlib.Path({str(marker)!r}).touch())\n"
        "time.sleep(60)"
    )
    plain = subprocess.Popen([*SLEEPER, "127.0.0.1:7001"])
    catcher = subprocess.Popen([sys.executable, "-c", catcher_code, "--listen", "127.0.0.1:7002"])
    try:
        deadline = time.monotonic() + 5.0
        while not processes.catches(catcher.pid, signal.SIGHUP):
            assert time.monotonic() < deadline, "the catcher did not install its handler"
            time.sleep(0.01)
        assert not processes.catches(plain.pid, signal.SIGHUP)
        records = (_server(tmp_path, "s1", plain), _server(tmp_path, "s2", catcher))
        state = ClusterState(tmp_path, "127.0.0.1:7000", 0.1, 5, 0, time.time(), records)
        reloads.reload_running(state, {"s1", "s2"})
        deadline = time.monotonic() + 5.0
        while not marker.exists():
            assert time.monotonic() < deadline, "the catcher got no SIGHUP"
            time.sleep(0.01)
        with pytest.raises(subprocess.TimeoutExpired):  # the plain one is not ended
            plain.wait(0.5)
    finally:
        for process in (plain, catcher):
            process.kill()
            process.wait()


def _server(directory: Path, name: str, process: subprocess.Popen[bytes]) -> ProcessRecord:
    argv = tuple(str(arg) for arg in process.args)  # type: ignore[union-attr]
    return _record(directory, name, process.pid, argv)


def _record(directory: Path, name: str, pid: int, argv: tuple[str, ...]) -> ProcessRecord:
    """A server record whose log is ``DIRECTORY/NAME.log`` (address: the last argument)."""
    return ProcessRecord(
        name=name,
        kind="server",
        role_at_start="idle",
        address=argv[-1] if argv else "127.0.0.1:7001",
        pid=pid,
        admin_port=0,
        metrics_port=0,
        log_file=str(directory / f"{name}.log"),
        argv=argv,
        started_at=time.time(),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", processes.FREE_PORT_RANGE),
        ("24000-24010", (24000, 24010)),
        (" 1024-65536 ", (1024, 65536)),
    ],
)
def test_the_ports_up_draws_from_can_be_narrowed(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[int, int]
) -> None:
    """``$PBKV_FREE_PORT_RANGE`` gives each of several clusters (or test workers) on one host
    its own slice, so none draws a port another recorded and will listen on again."""
    monkeypatch.setenv(processes.FREE_PORT_RANGE_ENV, value)
    assert processes.free_port_range() == expected
    if value.strip().startswith("24000"):
        ports = processes.free_ports("127.0.0.1", 5)
        assert all(24000 <= port < 24010 for port in ports) and len(set(ports)) == 5


def test_a_range_inside_the_ephemeral_range_is_drawn_from_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a range reaching below the kernel's ephemeral range is cut at its start (the
    default's case); one wholly inside it is the operator's choice."""
    monkeypatch.setattr(processes, "_ephemeral_range", lambda: (32768, 60999))
    monkeypatch.setenv(processes.FREE_PORT_RANGE_ENV, "40000-40100")
    assert all(40000 <= port < 40100 for port in processes.free_ports("127.0.0.1", 3))
    monkeypatch.setenv(processes.FREE_PORT_RANGE_ENV, "30000-40000")
    assert all(30000 <= port < 32768 for port in processes.free_ports("127.0.0.1", 3))


@pytest.mark.parametrize("value", ["20000", "a-b", "30000-20000", "80-90", "20000-70000"])
def test_a_port_range_that_is_not_one_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(processes.FREE_PORT_RANGE_ENV, value)
    with pytest.raises(processes.PortRangeError, match="expected LOW-HIGH") as caught:
        processes.free_port_range()
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-02T13:00:00.000Z server=127.0.0.1:7001 view=2 credentials_reload_failed "
        'reason="token file /x is empty" kept="the credentials in force"',
        '{"ts":"2026-12-02T13:00:00.000Z","kind":"server","node":"127.0.0.1:7001","view":2,'
        '"event":"credentials_reload_failed","reason":"token file /x is empty",'
        '"kept":"the credentials in force"}',
    ],
)
def test_a_reload_verdict_is_read_from_human_and_json_logs(tmp_path: Path, line: str) -> None:
    """``pbkv cluster reload`` reads each process's verdict with the log parser, so a cluster
    started with ``--log-format json`` is read as well as one with human lines."""
    log = tmp_path / "s1.log"
    listening = "2026-12-02T12:59:59.000Z server=127.0.0.1:7001 view=2 listening\n"
    log.write_text(listening + line + "\n")
    record = _record(tmp_path, "s1", 0, ())
    verdict = reloads._verdict(record, 0)
    assert verdict is not None and verdict.outcome == "failed"
    assert "reason=token file /x is empty" in verdict.detail
