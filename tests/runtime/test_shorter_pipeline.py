"""The host's batching (issue #11, item 5): a request that finds the replication stream idle is
handled inside the read that brought it, so its forward leaves at once; requests that arrive
while a forward is in flight wait for the end of the loop iteration and share one forward
(group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from pbkv.core.effects import Outbox
from pbkv.core.messages import AnyMessage, Put, Request
from pbkv.core.replica import Replica
from pbkv.core.replica_base import Phase, Role
from pbkv.runtime.loop import run
from pbkv.runtime.node import NodeHost
from tests.conftest import patches_compiled_code
from tests.runtime.inprocess import local_cluster


def serving_primary(nodes: list[NodeHost]) -> tuple[NodeHost, Replica]:
    for node in nodes:
        core = node.core
        if isinstance(core, Replica) and core.role is Role.PRIMARY:
            assert core.phase is Phase.SERVING
            return node, core
    raise AssertionError("no primary")


def request(client: str) -> Request:
    return Request(client, 0, 0, Put(client, "v"))


@patches_compiled_code
def test_a_lone_request_leaves_at_once_and_requests_behind_a_forward_share_the_next() -> None:
    run(lone_request_then_two_behind_it())


async def lone_request_then_two_behind_it() -> None:
    async with local_cluster() as cluster:
        node, core = serving_primary([running.node for running in cluster.servers])
        async with asyncio.timeout(5):
            while not core.stream_idle():
                await asyncio.sleep(0.01)
        batches: list[list[str]] = []
        handle = core.on_messages

        def spy(batch: Iterable[tuple[str, AnyMessage]], out: Outbox) -> None:
            messages = list(batch)
            clients = [m.client_id for _, m in messages if isinstance(m, Request)]
            batches.append(clients)
            handle(messages, out)

        core.on_messages = spy  # type: ignore[method-assign]
        start = core.next_index

        node.receive("conn:test", [request("alone")])
        assert batches == [["alone"]], "handled inside receive, not a loop iteration later"
        assert node.inbox == []
        assert core.next_index == start + 1
        assert not core.stream_idle(), "its forward is in flight"

        node.receive("conn:test", [request("first")])
        node.receive("conn:test", [request("second")])
        assert batches == [["alone"]], "held while a forward is in flight"
        assert len(node.inbox) == 2

        async with asyncio.timeout(5):
            while core.next_index < start + 3:
                await asyncio.sleep(0.001)
        assert ["first", "second"] in batches, f"one batch for both: {batches}"
        async with asyncio.timeout(5):
            while not core.stream_idle():
                await asyncio.sleep(0.01)
