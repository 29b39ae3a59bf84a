"""Each demo scenario end to end (``python -m pbkv demo SCENARIO``), asserting what it claims,
from its narration, its report and the processes' own logs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.cluster.helpers import kill_leftovers, pbkv

pytestmark = pytest.mark.integration

FINAL_CHECKS = (
    "PASS primary and backup hold the same data",
    "PASS every acknowledged write is present",
    "PASS no write applied twice",
    "PASS the recorded history is linearizable",
)


def run_demo(
    tmp_path: Path,
    *scenarios: str,
    bench_s: float = 0.0,
    leases: bool = False,
    extra: tuple[str, ...] = (),
) -> tuple[str, str, Path]:
    """Run the demo; return (stdout, report text, cluster dir). Asserts exit 0 and that nothing
    is left running."""
    directory = tmp_path / "demo"
    report = tmp_path / "report.md"
    result: subprocess.CompletedProcess[str] = pbkv(
        "demo",
        *scenarios,
        "--dir",
        str(directory),
        "--report",
        str(report),
        "--pace",
        "0.2",
        "--clients",
        "3",
        "--bench-seconds",
        str(bench_s),
        *(("--read-leases",) if leases else ()),
        *extra,
        timeout=120,
    )
    leftovers = kill_leftovers(tmp_path)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert not leftovers, f"the demo left processes running: {leftovers}"
    out = result.stdout
    for check in FINAL_CHECKS:
        assert f"verify: {check}" in out, out
    assert "nothing left running" in out
    assert re.search(r"all checks passed \((\d+)/\1\)", out), out
    assert "\x1b[" not in out  # not a terminal: plain text
    text = report.read_text()
    for section in ("## Checks", "## Failover times", "## Commands run", "## Timeline of views"):
        assert section in text
    assert "**FAIL**" not in text
    assert (directory / "history.jsonl").stat().st_size > 0
    return out, text, directory


def log(directory: Path, name: str) -> str:
    return (directory / "logs" / f"{name}.log").read_text()


def test_basic_shows_the_backup_holds_the_data(tmp_path: Path) -> None:
    out, report, directory = run_demo(tmp_path, "basic")
    recheck = pbkv("check-history", str(directory / "history.jsonl"))
    assert recheck.returncode == 0, recheck.stdout
    assert "basic: PASS a read returns what was written (greeting = 'hello, world')" in out
    assert "basic: PASS the backup holds the data" in out
    # the 6 workload keys and greeting; not the keys of scenarios that did not run (review)
    assert "verify: read every key once more through the client (7 keys)" in out
    assert re.search(r"backup 127\.0\.0\.1:\d+ \(s2\): role backup, view 2", out)
    assert "pbkv dump " in report
    assert "state_transfer_received" in log(directory, "s2")


def test_backup_failure_replaces_the_backup_and_the_old_one_rejoins(tmp_path: Path) -> None:
    out, report, directory = run_demo(tmp_path, "backup-failure")
    assert "backup-failure: $ pbkv cluster kill backup" in out
    assert re.search(r"view 3: primary=\S+ \(s1\) backup=\S+ \(s3\) \([\d.]+ s after kill", out)
    assert "state transfer to the new backup" in out
    assert "PASS the primary kept serving through the backup's failure" in out
    assert "server_declared_dead" in log(directory, "viewserver")
    assert log(directory, "s2").count(" listening address=") == 2  # restarted
    assert "| backup-failure | kill -9 backup s2 | 2 → 3 |" in report


def test_primary_failure_promotes_the_backup_within_a_second(tmp_path: Path) -> None:
    out, report, directory = run_demo(tmp_path, "primary-failure", bench_s=0.5)
    assert "PASS the backup was promoted" in out
    assert "PASS a write acknowledged before the crash survives" in out
    match = re.search(r"\| primary-failure \| kill -9 primary s1 \| 2 → 3 \| ([\d.]+) s \|", report)
    assert match, report
    assert float(match.group(1)) < 2.0
    assert "role_change role=primary previous=backup" in log(directory, "s2")
    assert "### primary-failure: kill -9 primary s1" in report  # log excerpt of the kill
    assert_pictures_versions_benchmark_and_step_excerpts(tmp_path, report)


def assert_pictures_versions_benchmark_and_step_excerpts(tmp_path: Path, report: str) -> None:
    """The report of a primary-failure run: its picture, versions, benchmark and excerpts."""
    assert (
        "![client operations per second, faults marked, views beneath](report-operations.svg)"
        in (report)
    )
    assert re.search(r"Ran on .+, Python 3\.\d+\.\d+ \(\w+\), pbkv \S+\.", report)
    picture = ET.fromstring((tmp_path / "report-operations.svg").read_text())
    texts = [element.text or "" for element in picture.iter() if element.tag.endswith("text")]
    assert "kill -9 primary s1" in texts and any(t.startswith("v3 ") for t in texts)
    assert "## Benchmark" in report and "throughput" in report
    assert ET.fromstring((tmp_path / "report-bench.svg").read_text()) is not None
    assert (tmp_path / "report-bench-latency.svg").exists()
    excerpt = report.split("### primary-failure: kill -9 primary s1")[1].split("```")[1]
    lines = excerpt.strip().splitlines()
    assert lines[0].startswith(">> ") and "cluster_kill target=s1" in lines[0]  # the step itself
    assert sum(line.startswith(">> ") for line in lines) == 1
    assert "cluster_restart" not in excerpt  # the next step has its own excerpt
    assert "view_change" in excerpt


def test_sequential_failures_survive_two_primary_crashes(tmp_path: Path) -> None:
    out, report, _ = run_demo(tmp_path, "sequential-failures")
    assert out.count("$ pbkv cluster kill primary") == 2
    assert "PASS a write survives two primary crashes in a row" in out
    assert "both crashed servers are back" in out
    assert report.count("| sequential-failures | kill -9 primary") == 2


def test_partition_old_primary_refuses_reads_and_no_split_brain(tmp_path: Path) -> None:
    out, report, directory = run_demo(tmp_path, "partition")
    refused = re.search(
        r"PASS the partitioned old primary refused a read \(no stale read\) \((\w[\w ]*)(.*)\)", out
    )
    assert refused, out
    assert refused.group(1) in ("wrong_server", "no answer")
    if refused.group(1) == "wrong_server":  # and says why: its backup moved on
        assert re.match(r": \S+ is primary \(stalled\) in view \d+: backup ", refused.group(2))
    assert "PASS no split brain: exactly one server serves as primary" in out
    # view 2 on an idle machine; a later one if a slow disk or CPU cost s2 its role before
    assert re.search(r"s1 still believes it is primary of view \d+ ", out), out
    assert "healed: s1 heard the view service again" in out
    s1 = log(directory, "s1")
    assert "fault_partition" in s1 and "forward_rejected" in s1
    assert "pbkv cluster partition primary viewserver" in report


def test_with_read_leases_a_primary_cut_off_never_shows_a_value_the_new_view_overwrote(
    tmp_path: Path,
) -> None:
    """R2, R3 on real processes: the old primary still reaches its backup and the clients; its
    lease ran out before the new view existed, so its raw read of the overwritten key is
    refused, never answered from its store."""
    out, _, _ = run_demo(tmp_path, "partition", leases=True)
    assert "--read-leases" in out
    assert "$ pbkv put partition 'after-the-cut'" in out
    assert "PASS the partitioned old primary refused a read (no stale read)" in out
    assert "PASS no split brain: exactly one server serves as primary" in out


@pytest.mark.slow  # tests/cluster/test_read_leases.py is the sharper check, in the default suite
def test_with_read_leases_a_resumed_primary_rechecks_its_lease(tmp_path: Path) -> None:
    """The pause scenario passes with leases on: SIGSTOP past the dead interval, SIGCONT, a
    raw read: refused. (Its probe opens a new connection, so it arrives after the resumed
    primary heard the new view; tests/cluster/test_read_leases.py queues the read before the
    SIGCONT, which only the lease clock, R4, can refuse.)"""
    out, _, _ = run_demo(tmp_path, "pause", leases=True)
    assert "PASS the resumed old primary refused a read (no stale read)" in out
    assert re.search(r"s1 learned view \d+ and is now idle", out)


def test_pause_freezes_the_primary_and_it_refuses_after_resuming(tmp_path: Path) -> None:
    out, _, directory = run_demo(tmp_path, "pause")
    assert "$ pbkv cluster kill primary --signal STOP" in out
    assert "$ pbkv cluster resume s1" in out
    assert "PASS the resumed old primary refused a read (no stale read)" in out
    assert re.search(r"s1 learned view \d+ and is now idle", out)
    assert "role_change role=idle" in log(directory, "s1")


@pytest.mark.parametrize("leases", [False, True])
def test_replaced_backup_takes_over_when_the_primary_is_cut_off(
    tmp_path: Path, leases: bool
) -> None:
    """V15 on real processes, as a student runs it: the view service fences the view that
    replaced the frozen backup, then makes that backup primary from the store it kept; with
    read leases the service first waits out the cut-off primary's lease (R3)."""
    out, report, directory = run_demo(tmp_path, "replaced-backup", leases=leases)
    assert "$ pbkv cluster partition viewserver primary --one-way" in out
    assert "PASS view 3 was fenced at its backup first (V15)" in out
    assert "PASS s2, the replaced backup, took over from the store it kept (V15)" in out
    assert "PASS the write before the faults survived" in out
    assert "PASS the cut-off old primary refused a read" in out
    assert "view_fenced fenced=3 synced=0" in log(directory, "s3")
    assert "primary_from_retained_state retained_view=2" in log(directory, "s2")
    assert "pbkv cluster resume s2" in report


@pytest.mark.parametrize("leases", [False, True], ids=["confirmed-reads", "read-leases"])
def test_slow_disk_replaces_the_primary_and_its_log_says_why(tmp_path: Path, leases: bool) -> None:
    """N6 on real processes: every fsync of the primary 2 dead intervals slower (--fsync
    always); its pings wait behind its writes, the service replaces it, the write answered
    meanwhile survives, and the slowed server's own log names the slow fsync."""
    out, report, directory = run_demo(tmp_path, "slow-disk", leases=leases)
    assert "$ pbkv cluster slow-disk primary --ms 500   # s1" in out
    assert re.search(r"slow-disk: view 3: primary=\S+ \(s2\)", out), out
    assert "PASS the slowed primary s1 says why in its own log (disk_sync_slow, N6)" in out
    assert "PASS a write answered while the primary's disk was slow is served" in out
    assert "PASS no split brain" in out
    s1 = log(directory, "s1")
    assert "fault_slow_disk delay_ms=500.0" in s1
    assert re.search(r"disk_sync_slow what=\w+ duration_ms=(5\d\d|[6-9]\d\d|\d{4,})", s1), s1
    assert "pbkv cluster slow-disk primary" in report
    assert "is taken back and replaced again" not in out  # s3 was the spare


def test_slow_disk_without_a_spare_server_flaps_until_healed(tmp_path: Path) -> None:
    """Two servers: the slowed one is the only candidate backup, so it is taken back, misses
    pings behind its transfer's fsync and is replaced again, until the disk is healed."""
    out, _, directory = run_demo(tmp_path, "slow-disk", extra=("--servers", "2"))
    assert "no spare server: the service takes s1 back as backup" in out
    flaps = re.search(r"PASS without a spare, s1 is taken back .* \((\d+) more views in", out)
    assert flaps is not None and int(flaps.group(1)) >= 2, out
    assert re.search(r"healed: .* it learned view \d+ and is backup", out), out
    assert "what=snapshot" in log(directory, "s1")  # the transfer's install waited too


@pytest.mark.slow
def test_the_whole_default_demo_passes_in_under_a_minute(tmp_path: Path) -> None:
    out, _, _ = run_demo(tmp_path)
    seconds = float(re.findall(r"in ([\d.]+) s; primary failovers", out)[-1])
    assert seconds < 60


@pytest.mark.parametrize(
    "signal_number",
    [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
def test_an_interrupted_demo_stops_everything(tmp_path: Path, signal_number: int) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "pbkv", "demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "backup-failure:" not in seen and time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        seen += line
    demo.send_signal(signal_number)
    rest, _ = demo.communicate(timeout=30)
    leftovers = kill_leftovers(tmp_path)
    assert demo.returncode == 130, seen + rest
    assert "interrupted: stopping the cluster" in rest
    assert "nothing left running" in rest
    assert not leftovers


def test_unknown_scenario_is_a_usage_error() -> None:
    result = pbkv("demo", "nope")
    assert result.returncode == 2 and "nope" in result.stderr


def test_demo_help_lists_scenarios_with_an_example() -> None:
    result = pbkv("demo", "--help")
    assert result.returncode == 0
    for name in ("basic", "backup-failure", "primary-failure", "sequential-failures"):
        assert name in result.stdout
    assert "Example" in result.stdout and "--report" in result.stdout


@pytest.mark.slow
def test_coordinator_failure_kills_the_leader_view_service_then_the_primary(
    tmp_path: Path,
) -> None:
    """``pbkv demo --etcd coordinator-failure`` (3 etcd members, 3 view services): slow, since
    etcd and six more processes start (the same faults are in tests/etcd, in the default run)."""
    out, report, directory = run_demo(tmp_path, "coordinator-failure")
    assert "PASS a new view service leader within 2 s" in out
    assert "PASS the new leader failed the primary over" in out
    assert "PASS a write acknowledged before both crashes survives" in out
    assert "leadership_won" in log(directory, "viewserver2") + log(directory, "viewserver3")
    assert "pbkv cluster kill viewserver" in report


def test_power_cut_comes_back_from_disk_with_every_acknowledged_write(tmp_path: Path) -> None:
    out, report, directory = run_demo(tmp_path, "power-cut")
    assert "$ pbkv cluster up --durable --fsync always" in out
    assert "$ for p in viewserver s1 s2 s3; do pbkv cluster kill $p & done; wait" in out
    assert "kill -9 of 4 processes at once" in out
    kills = [line for line in log(directory, "cluster").splitlines() if "cluster_kill" in line]
    assert len(kills) == 4  # every process, in one step
    assert (
        "PASS a write acknowledged just before the power cut survives "
        "(power-cut = 'acknowledged-just-before-the-cut')" in out
    )
    recovered = re.search(
        r"PASS both replicas of the view before the cut recovered their state from disk "
        r"\(s1 keys=(\d+) position=(\d+); s2 keys=(\d+) position=(\d+)\)",
        out,
    )
    assert recovered, out
    assert all(int(number) > 0 for number in recovered.groups())
    assert re.search(
        r"restarted s1 \(pid \d+\): empty memory, its disk kept: it recovers [1-9]", out
    )
    assert re.search(r"power-cut: \S+ s2 view=0 storage_recovered path=\S+/data/s2 ", out)
    assert "PASS the recovered view is served by a replica of the view before the cut" in out
    caught_up = re.search(
        r"PASS the backup was brought up to date before the view was acknowledged \("
        r"(catch-up of the returning backup|full state transfer to the returning backup|"
        r"state transfer to the new backup) \S+ \(s\d\)[:,] .*?(\d+) bytes",
        out,
    )
    assert caught_up, out
    event = "catch_up_done" if caught_up.group(1).startswith("catch-up") else "state_transfer_done"
    assert event in log(directory, "s1") + log(directory, "s2") + log(directory, "s3")
    row = r"\| power-cut \| power cut: kill -9 of every process \| (\d+) → (\d+) \| [\d.]+ s \|"
    views = re.search(row, report)
    assert views and int(views.group(2)) > int(views.group(1)), report
    assert "storage_recovered" in report


def test_double_failure_with_two_backups_loses_nothing(tmp_path: Path) -> None:
    """K = 2: the primary and a backup killed at once; the other backup takes over (V14)."""
    out, text, _ = run_demo(tmp_path, "--servers", "4", "--backups", "2", "double-failure")
    assert "PASS the surviving backup was promoted" in out, out
    assert "PASS a write acknowledged before losing two of three members survives" in out, out
    assert "double-failure" in text


def test_double_failure_without_two_backups_is_a_usage_error(tmp_path: Path) -> None:
    result = pbkv("demo", "double-failure", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert "--servers 4 --backups 2" in result.stderr and "Traceback" not in result.stderr
