"""Leadership and fencing against a real etcd, in process (``pbkv.runtime.etcd``), and the
audit's checks shown to catch what they look for."""

from __future__ import annotations

import asyncio
import itertools

import aetcd
import pytest

from pbkv.check.etcd_audit import audit, view_history
from pbkv.cluster.etcd import EtcdCluster
from pbkv.core.effects import PersistView
from pbkv.core.messages import View
from pbkv.runtime.config import ConfigError
from pbkv.runtime.etcd import EtcdOptions, Leadership, decode_view, parse_endpoints
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.persist import encode_view

_names = itertools.count(1)


def options(etcd: EtcdCluster, prefix: str) -> EtcdOptions:
    return EtcdOptions(parse_endpoints(etcd.endpoints), prefix, lease_ttl_s=1)


class Recorder:
    def __init__(self) -> None:
        self.elected: list[tuple[PersistView | None, int]] = []
        self.lost: list[str] = []

    def on_elected(self, saved: PersistView | None, token: int) -> None:
        self.elected.append((saved, token))

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


def member(name: str, etcd: EtcdCluster, prefix: str) -> tuple[Leadership, Recorder]:
    recorder = Recorder()
    logger = EventLogger("viewserver", name, int, enabled=False)
    leadership = Leadership(
        name, options(etcd, prefix), logger, recorder.on_elected, recorder.on_lost
    )
    return leadership, recorder


async def until(predicate: object, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def state(number: int, primary: str, backup: str | None = None) -> PersistView:
    return PersistView(View(number, primary, (backup,) if backup else ()), True, ())


def test_a_deposed_leader_can_never_write_a_view(etcd: EtcdCluster) -> None:
    prefix = f"/pbkv/fence{next(_names)}"

    async def scenario() -> None:
        first, first_events = member("a:1", etcd, prefix)
        first.start()
        await until(lambda: first_events.elected)
        assert await first.write_view(state(1, "s1"))
        second, second_events = member("b:1", etcd, prefix)
        second.start()
        await asyncio.sleep(0.3)
        assert not second_events.elected and second.leader == "a:1"
        # Depose the first from outside, as if its lease expired while it was paused; its
        # keepalive is stopped and its clock says it still leads: only the fence can stop it.
        for task in first.tasks:
            task.cancel()
        loop = asyncio.get_running_loop()
        first.valid_until = loop.time() + 60.0
        assert first.lease_id is not None
        host, port = etcd.members[1].endpoint.split(":")
        async with aetcd.Client(host, int(port)) as outside:
            await outside.revoke_lease(first.lease_id)
        await until(lambda: second_events.elected)
        saved, token = second_events.elected[0]
        assert saved is not None and saved.view.number == 1
        assert token > first_events.elected[0][1]
        assert first.leading(loop.time()) and not first_events.lost
        assert not await first.write_view(state(2, "s9"))
        assert first_events.lost, "a fenced write must end leadership"
        assert await second.write_view(state(2, "s2"))
        await first.stop()
        await second.stop()

    asyncio.run(scenario())
    history = asyncio.run(view_history(etcd.endpoints, prefix))
    assert [(number, config[0]) for _, number, config in history] == [(1, "s1"), (2, "s2")]


def test_a_stopped_leader_hands_over_at_once(etcd: EtcdCluster) -> None:
    prefix = f"/pbkv/handover{next(_names)}"

    async def scenario() -> float:
        first, first_events = member("a:1", etcd, prefix)
        second, second_events = member("b:1", etcd, prefix)
        first.start()
        await until(lambda: first_events.elected)
        second.start()
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await first.stop()  # revokes the lease
        await until(lambda: second_events.elected, 2.0)
        took = loop.time() - stopped
        await second.stop()
        return took

    assert asyncio.run(scenario()) < 0.5


def test_audit_catches_two_views_with_one_number(etcd: EtcdCluster) -> None:
    prefix = f"/pbkv/broken{next(_names)}"

    async def write_broken_history() -> None:
        host, port = etcd.members[0].endpoint.split(":")
        async with aetcd.Client(host, int(port)) as client:
            for written in (state(1, "s1"), state(2, "s1", "s2"), state(2, "s2", "s3")):
                await client.put(f"{prefix}/view".encode(), encode_view(written))

    asyncio.run(write_broken_history())
    history = asyncio.run(view_history(etcd.endpoints, prefix))
    assert len(history) == 3
    report = audit(history, [])
    assert not report.ok and "view 2" in report.problems[0]
    learned = 'view_learned role=primary view="view 1 (primary=s9, backup=-)"'
    lines = [f"2026-01-01T00:00:00Z server=s1 view=1 {learned}"]
    assert not audit(history[:1], lines).ok, "a server's view that etcd never held is caught"
    assert audit(history[:2], lines[:0]).ok


def test_stored_views_are_validated_and_endpoints_parsed() -> None:
    assert decode_view(encode_view(state(3, "a:1", "b:1"))) == state(3, "a:1", "b:1")
    for raw in (b"{", b'{"version":1,"number":0,"primary":"a","backups":[],"acknowledged":true}'):
        with pytest.raises(ValueError):
            decode_view(raw)
    assert parse_endpoints("http://127.0.0.1:1, 127.0.0.1:2/") == ("127.0.0.1:1", "127.0.0.1:2")
    assert parse_endpoints("https://h:1,https://h:2") == ("h:1", "h:2")
    for bad in ("", "https://h:1,http://h:2", "https://h:1,h:2", "h"):
        with pytest.raises(ConfigError):
            parse_endpoints(bad)
