"""End to end: a backup damaged behind the primary's back fails the final verification, and a
failed check makes the demo exit non-zero.

The runtime has no "write to the backup" path, so the damage is done the way a buggy or
malicious primary would: a crafted ``Forward`` sent straight to the backup, claiming to come from
the primary of the backup's own view, at the stream position the backup expects next (which an
empty ``Forward`` reveals). The backup applies it (P3 checks only the claimed view and sender);
the primary never executed it, so the replicas now differ.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

import pbkv
from pbkv.check import Operation
from pbkv.cluster import manager
from pbkv.cluster.rpc import call, dump_all, get_view
from pbkv.cluster.state import ClusterState
from pbkv.core.messages import Forward, ForwardReply, Put, Request, View
from pbkv.demo import runner
from pbkv.demo.verify import Check, verify
from tests.cluster.helpers import kill_leftovers

pytestmark = pytest.mark.integration


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[ClusterState]:
    directory = tmp_path / "cluster"
    config = manager.ClusterConfig(
        directory=directory, servers=2, base_port=0, ping_interval_s=0.05
    )
    state = manager.up(config)
    try:
        yield state
    finally:
        manager.down(directory)
        assert not kill_leftovers(tmp_path)


def _inject_into_backup(view: View, key: str, value: str) -> None:
    assert view.primary is not None and view.backup is not None
    probe = call(view.backup, Forward(view.number, view.primary, 0, ()))
    assert isinstance(probe, ForwardReply) and probe.accepted
    request = Request("intruder", 0, 0, Put(key, value))
    reply = call(view.backup, Forward(view.number, view.primary, probe.next_index, (request,)))
    assert isinstance(reply, ForwardReply) and reply.accepted
    assert reply.next_index == probe.next_index + 1


def test_verification_fails_when_the_backup_was_written_behind_the_primarys_back(
    two_servers: ClusterState,
) -> None:
    history: list[Operation] = []
    with pbkv.Client(two_servers.viewserver, timeout=10) as kv:
        kv.put("greeting", "hello")
        kv.append("log-a", "[c1.1]")
        history.append(Operation("c1", "put", "greeting", "hello", 0.0, 1.0, None))
        history.append(Operation("c1", "append", "log-a", "[c1.1]", 2.0, 3.0, None))
        view = get_view(two_servers.viewserver)
        healthy = _verify(view, history)
        assert all(c.ok for c in healthy), healthy

        _inject_into_backup(view, "greeting", "damaged")
        checks = _verify(view, history)
    agree = checks[0]
    assert not agree.ok
    assert "values differ for greeting" in agree.detail
    assert "primary 'hello', backup 'damaged'" in agree.detail


def _verify(view: View, history: list[Operation]) -> list[Check]:
    assert view.primary is not None and view.backup is not None
    _, primary = dump_all(view.primary)
    _, backup = dump_all(view.backup)
    return verify(primary, backup, history, {"greeting": primary.get("greeting")}, budget_s=5.0)


def test_the_demo_exits_non_zero_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def damaged_verify(
        primary: dict[str, str], backup: dict[str, str] | None, *args: object
    ) -> list[Check]:
        assert backup is not None
        return verify(primary, {**backup, "greeting": "damaged"}, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "verify", damaged_verify)
    out = io.StringIO()
    options = runner.DemoOptions(scenarios=("basic",), directory=tmp_path / "demo", pace_s=0.0)
    code = runner.run_demo(options, out)
    text = out.getvalue()
    assert code == runner.EXIT_FAILED, text
    assert "verify: FAIL primary and backup hold the same data (values differ for greeting" in text
    assert "SOME CHECKS FAILED" in text
    assert not kill_leftovers(tmp_path)
