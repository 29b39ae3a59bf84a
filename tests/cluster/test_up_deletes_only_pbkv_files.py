"""``pbkv cluster up`` starts a new cluster empty, deleting what a previous one left in
``--dir``, and nothing else: a file pbkv did not write where it deletes is refused with one line
(exit 4), even with ``--fresh`` (test_durable_up.py has the real processes). Here, without
processes (nothing is started: ``start_and_wait`` is a stand-in), every directory ``up``
deletes in: ``data/`` and ``viewserver.data/`` were checked, ``etcd/`` and ``tls/`` (removed
whole) and the stale ``logs/*.log`` were not (audit: someone's ``etcd/config/etcd.yaml``, the
certificates in ``tls/`` and ``logs/app.log`` of a project directory given as ``--dir`` went
without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbkv.cluster import data_dirs, manager
from pbkv.cluster.manager import ClusterConfig
from pbkv.cluster.state import state_path, stopped_path
from pbkv.cluster.targets import ClusterError

NOT_PBKV = "not pbkv's"


class NothingStarts(Exception):
    """``up`` got past its refusals and deletions: where it would start processes."""


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def start_and_wait(*args: object) -> None:
        raise NothingStarts

    monkeypatch.setattr(manager, "start_and_wait", start_and_wait)


def _write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(NOT_PBKV)


@pytest.mark.usefixtures("no_start")
@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize(
    "foreign",
    [
        "viewserver.data/notes.txt",
        "etcd/config/etcd.yaml",
        "etcd/etcd1.data.bak",
        "etcd/etcd2.data",
        "tls/server.crt",
        "tls/server.pem",
        "tls/keys/ca.pem",
        "logs/app.log",
    ],
)
def test_up_refuses_a_file_pbkv_did_not_write_where_it_deletes(
    tmp_path: Path, foreign: str, fresh: bool
) -> None:
    _write(tmp_path, foreign)
    with pytest.raises(ClusterError, match="holds files pbkv did not write") as refused:
        manager.up(ClusterConfig(tmp_path, base_port=0, fresh=fresh))
    assert f"({foreign}): use another --dir" in str(refused.value)
    assert (tmp_path / foreign).read_text() == NOT_PBKV


@pytest.mark.usefixtures("no_start")
def test_what_pbkv_wrote_there_goes_and_nothing_else(tmp_path: Path) -> None:
    """The layout a --etcd --tls --durable cluster leaves (etcd's own files in its members'
    data directories), and beside it what up never deletes."""
    ours = [
        "data/s1/LOCK",
        "data/s1/wal-0000000001.log",
        "viewserver.data/view.json",
        "etcd/etcd1.data/member/snap/db",
        "etcd/etcd3.data/member/wal/0000000000000000-0000000000000000.wal",
        "tls/ca.pem",
        "tls/ca.key",
        "tls/client.pem",
        "tls/viewserver2.key",
        "tls/s12.pem",
        "logs/s4.log",
        "logs/etcd2.log",
        "logs/cluster.log",
    ]
    kept = ["logs/notes.txt", "logs/old/app.log", "notes.md"]
    _write(tmp_path, *ours, *kept)
    assert data_dirs.foreign_files(tmp_path) == []
    with pytest.raises(NothingStarts):
        manager.up(ClusterConfig(tmp_path, base_port=0, servers=1, fresh=True))
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {*kept, "auth-token", "auth-token.accept", "logs/viewserver.log", "logs/s1.log"}


def test_is_pbkv_file_takes_only_the_view_files_names() -> None:
    assert data_dirs.is_pbkv_file("view.json") and data_dirs.is_pbkv_file("view.tmp")
    for name in ("view.json.bak", "views.txt", "view.json~", "view"):
        assert not data_dirs.is_pbkv_file(name), name


def test_a_plain_file_where_a_data_directory_goes_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "data")
    assert data_dirs.foreign_files(tmp_path) == ["data"]


def test_the_refusal_names_three_files_and_says_when_there_are_more(tmp_path: Path) -> None:
    _write(tmp_path, "data/a.jpg", "data/b.jpg", "data/c.jpg")
    with pytest.raises(ClusterError) as three:
        data_dirs.refuse_durable_data(tmp_path, fresh=True)
    assert "(data/a.jpg, data/b.jpg, data/c.jpg): use another --dir" in str(three.value)
    _write(tmp_path, "data/d.jpg")
    with pytest.raises(ClusterError) as four:
        data_dirs.refuse_durable_data(tmp_path, fresh=True)
    assert "(data/a.jpg, data/b.jpg, data/c.jpg ...): use another --dir" in str(four.value)


def test_durable_data_is_refused_without_fresh_and_resume_offered_only_when_kept(
    tmp_path: Path,
) -> None:
    (tmp_path / "data" / "s2").mkdir(parents=True)  # an empty directory holds no data
    assert data_dirs.data_holders(tmp_path) == []
    data_dirs.refuse_durable_data(tmp_path, fresh=False)
    (tmp_path / "data" / "s1").mkdir()
    (tmp_path / "data" / "s1" / "LOCK").write_text("")
    with pytest.raises(ClusterError, match=r"durable cluster \(s1\)") as refused:
        data_dirs.refuse_durable_data(tmp_path, fresh=False)
    assert "--resume" not in str(refused.value)  # no record of that cluster: nothing to resume
    stopped_path(tmp_path).write_text("{}")
    with pytest.raises(ClusterError, match="add --resume to start that cluster again, --fresh"):
        data_dirs.refuse_durable_data(tmp_path, fresh=False)
    data_dirs.refuse_durable_data(tmp_path, fresh=True)


def test_a_damaged_state_file_does_not_keep_a_new_cluster_out(tmp_path: Path) -> None:
    """No process can be found from it, and up replaces it (the refusal would say to remove it
    by hand, and nothing else would)."""
    state_path(tmp_path).write_text("{not json")
    manager.refuse_if_running(tmp_path)
