"""``pbkv cluster rotate-secret`` (``pbkv.cluster.rotation``): a local cluster's secret replaced
on the running processes by the guide's three steps, each a reload of every process, and a
rotation that a process cannot follow stopped safely and finished with ``--continue``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import pbkv
from pbkv.cluster import credentials, rotation
from pbkv.cluster.rpc import dump_page
from pbkv.cluster.state import load_state
from pbkv.cluster.targets import ClusterError
from tests.cluster.helpers import cluster, state_file, status, up
from tests.cluster.helpers import pbkv as run_pbkv
from tests.cluster.test_certificate_renewal import tls_client


def secret(directory: Path) -> str:
    return credentials.token_path(directory).read_text().strip()


def assert_not_rotating(directory: Path, secret_before: str) -> None:
    """The directory's secret is still ``secret_before``, accepted alone, no rotation under way."""
    assert secret(directory) == secret_before
    assert credentials.accept_path(directory).read_text() == ""
    assert rotation.stopped_at(directory) is None


def reloads_logged(directory: Path, name: str) -> int:
    log = Path(load_state(directory).find(name).log_file).read_text()  # type: ignore[union-attr]
    return log.count(" credentials_reloaded ")


@pytest.mark.integration
def test_a_rotation_replaces_the_secret_on_the_running_cluster_and_refuses_the_old_one(
    cluster_dir: Path,
) -> None:
    """Three steps, each taken by every process (three reloads each); the view never changes
    (no process ever refused another: a failover would have shown it), a write after the
    rotation reaches the backup, a client of the old secret is refused and one of the new is
    served, and a failover afterwards makes new links with the new secret."""
    up(cluster_dir, "--servers", "3")
    old = secret(cluster_dir)
    view = status(cluster_dir)["view"]
    viewserver = state_file(cluster_dir)["processes"][0]["name"]
    with pbkv.Client(status(cluster_dir)["viewserver"], timeout=10.0, token=old) as kv:
        kv.put("before", "1")
    out = cluster(cluster_dir, "rotate-secret")
    lines = out.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == ["step 1/3", "step 2/3", "step 3/3"]
    assert lines[-1] == "rotated: every process presents and accepts the new secret alone"
    new = secret(cluster_dir)
    assert new != old and len(new) == 64
    assert credentials.accept_path(cluster_dir).read_text() == ""
    assert not rotation.marker_path(cluster_dir).exists()
    assert all(reloads_logged(cluster_dir, name) == 3 for name in (viewserver, "s1", "s2", "s3"))
    assert status(cluster_dir)["view"]["number"] == view["number"]
    address = status(cluster_dir)["viewserver"]
    with (
        pbkv.Client(address, timeout=5.0, token=old) as kv,
        pytest.raises(pbkv.AuthenticationFailed),
    ):
        kv.get("before")
    with pbkv.Client(address, timeout=10.0, token=new) as kv:
        assert kv.get("before") == "1"
        kv.put("after", "2")
    load_state(cluster_dir)  # this process's tools present the new secret
    backup = dump_page(status(cluster_dir)["view"]["backup"])
    assert dict(backup.items) == {"before": "1", "after": "2"}
    cluster(cluster_dir, "kill", "primary")
    with pbkv.Client(address, timeout=15.0, token=new) as kv:
        assert [kv.get("before"), kv.get("after")] == ["1", "2"]
        kv.put("after-failover", "3")


@pytest.mark.integration
def test_a_step_a_process_cannot_take_stops_the_rotation_and_continue_finishes_it(
    cluster_dir: Path,
) -> None:
    """s2's certificate file is damaged, so its reload fails (all or nothing) and the first
    step stops there (exit 5): the files stay those of step 1, the marker says so, a new
    rotation is refused, and the cluster serves. With the file mended, ``--continue`` takes
    the rotation to its end."""
    up(cluster_dir, "--tls", "--servers", "2")
    old = secret(cluster_dir)
    pem = credentials.tls_dir(cluster_dir) / "s2.pem"
    kept = pem.read_bytes()
    pem.write_bytes(b"not a certificate")
    result = run_pbkv("cluster", "rotate-secret", "--dir", str(cluster_dir))
    assert result.returncode == 5, result
    assert result.stdout.startswith("step 1/3 (accept the new secret): "), result
    assert "  s2: failed: reason=" in result.stdout
    assert "stopped at step 1" in result.stderr and "--continue" in result.stderr
    assert rotation.stopped_at(cluster_dir) == 1 and secret(cluster_dir) == old
    said = "secret rotation stopped at step 1 of 3 (accept the new secret); `pbkv cluster"
    assert status(cluster_dir)["secret_rotation"].startswith(said)
    assert said in cluster(cluster_dir, "status")
    refused = run_pbkv("cluster", "rotate-secret", "--dir", str(cluster_dir))
    assert refused.returncode == 4 and "stopped at step 1 of 3" in refused.stderr, refused
    tls_client(cluster_dir, "put", "during", "served")
    pem.write_bytes(kept)
    out = cluster(cluster_dir, "rotate-secret", "--continue")
    assert out.splitlines()[0].startswith("step 1/3") and out.endswith("new secret alone\n")
    assert secret(cluster_dir) != old and rotation.stopped_at(cluster_dir) is None
    assert status(cluster_dir)["secret_rotation"] == ""
    assert tls_client(cluster_dir, "get", "during").strip() == "served"


@pytest.mark.integration
def test_a_paused_process_is_refused_before_any_file_changes(cluster_dir: Path) -> None:
    up(cluster_dir, "--servers", "2")
    old = secret(cluster_dir)
    s2 = load_state(cluster_dir).find("s2")
    assert s2 is not None
    os.kill(s2.pid, signal.SIGSTOP)
    try:
        result = run_pbkv("cluster", "rotate-secret", "--dir", str(cluster_dir))
    finally:
        os.kill(s2.pid, signal.SIGCONT)
    assert result.returncode == 4 and "s2 is paused" in result.stderr, result
    assert_not_rotating(cluster_dir, old)


def test_a_process_recorded_without_an_accept_file_gets_one_when_started_again(
    tmp_path: Path,
) -> None:
    """A cluster recorded by an earlier release: ``restart`` and ``up --resume`` add the
    accept file beside the token file; a process without a token file is left as it was."""
    token = credentials.ensure_token(tmp_path)
    credentials.accept_path(tmp_path).unlink()
    argv = ("pbkv", "server", "--auth-token-file", str(token))
    upgraded = credentials.with_accept_file(argv)
    assert upgraded == (*argv, credentials.ACCEPT_FLAG, str(credentials.accept_path(tmp_path)))
    assert credentials.accept_path(tmp_path).read_text() == ""
    assert credentials.with_accept_file(upgraded) == upgraded
    assert credentials.with_accept_file(("etcd", "--name", "e1")) == ("etcd", "--name", "e1")


@pytest.mark.parametrize("text", ["", "0", "4", "two"])
def test_a_damaged_marker_is_refused_with_what_to_do(tmp_path: Path, text: str) -> None:
    rotation.marker_path(tmp_path).write_text(text)
    with pytest.raises(ClusterError, match="does not name a step 1-3"):
        rotation.stopped_at(tmp_path)
    assert rotation.stopped_note(tmp_path).startswith("secret rotation: ")


def test_a_new_cluster_accepts_no_second_secret_whatever_a_stopped_rotation_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``up`` (a new cluster) keeps the directory's secret but empties the accept file and
    forgets a stopped rotation; ``up --resume`` (the same cluster) does not pass here."""
    from pbkv.cluster import manager
    from pbkv.cluster.manager import ClusterConfig

    class NothingStarts(Exception):
        pass

    def start_and_wait(*args: object) -> None:
        raise NothingStarts

    monkeypatch.setattr(manager, "start_and_wait", start_and_wait)
    credentials.ensure_token(tmp_path)
    old = secret(tmp_path)
    credentials.write_secret(credentials.accept_path(tmp_path), credentials.new_secret())
    rotation.marker_path(tmp_path).write_text("1")
    with pytest.raises(NothingStarts):
        manager.up(ClusterConfig(tmp_path, base_port=0, servers=1))
    assert_not_rotating(tmp_path, old)


def test_one_rotation_at_a_time_and_with_nothing_running_the_files_alone_change(
    tmp_path: Path,
) -> None:
    """Two rotations at once would interleave their files: the second is refused while the
    first holds the lock. With no process running every step is taken at once and the
    processes started later read the new secret."""
    import fcntl

    from pbkv.cluster.state import ClusterState, save_state

    credentials.ensure_token(tmp_path)
    old = secret(tmp_path)
    state = ClusterState(tmp_path, "127.0.0.1:1", 0.1, 5, 0, 0.0, ())
    save_state(state)
    holder = os.open(tmp_path / rotation.LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(ClusterError, match="another `pbkv cluster rotate-secret` is running"):
            rotation.rotate_secret(state)
        assert_not_rotating(tmp_path, old)
    finally:
        os.close(holder)
    reports = rotation.rotate_secret(state)
    assert [report.step for report in reports] == [1, 2, 3]
    assert all(report.taken and report.outcomes == () for report in reports)
    assert reports[0].lines() == ["step 1/3 (accept the new secret): no process running"]
    assert secret(tmp_path) != old and credentials.accept_path(tmp_path).read_text() == ""
