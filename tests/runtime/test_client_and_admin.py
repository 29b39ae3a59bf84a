"""The async client and the admin port against hosts running in the test's own loop."""

from __future__ import annotations

import asyncio
import time

import pytest

import pbkv
from pbkv.core.kv_store import Limits
from pbkv.core.messages import ErrorReply, Get, Put, Reply, Request
from pbkv.core.replica import ReplicaConfig
from pbkv.runtime.admin import (
    AdminOk,
    AdminRequestFailed,
    AdminStatusReply,
    Heal,
    Partition,
    Unreliable,
    send_admin_async,
)
from pbkv.runtime.config import Timing
from pbkv.runtime.rpc import async_call, handshake_async, tool_security
from pbkv.wire import MESSAGES

from .inprocess import STEADY, LocalCluster, local_cluster, scrape_metrics


def test_async_client_operations_and_view() -> None:
    async def main() -> None:
        async with (
            local_cluster(servers=2, timing=STEADY) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=10.0) as kv,
        ):
            await kv.put("k", "v")
            await kv.append("k", "w")
            await kv.append("new", "x")
            assert await kv.get("k") == "vw"
            assert await kv.get("new") == "x"
            assert await kv.get("missing") is None
            await kv.delete("k")
            assert await kv.get("k") is None
            await asyncio.gather(*(kv.put(f"k{i}", str(i)) for i in range(300)))
            values = await asyncio.gather(*(kv.get(f"k{i}") for i in range(300)))
            assert values == [str(i) for i in range(300)]
            view = await kv.view()
            assert isinstance(view, pbkv.View) and view.number == 2
            assert view.primary == cluster.servers[0].name
            assert view.backup == cluster.servers[1].name == view.backups[0]

    asyncio.run(main())


def test_limits_give_request_rejected_and_types_give_type_error() -> None:
    async def main() -> None:
        async with (
            local_cluster(servers=1, limits=Limits(key_bytes_max=8)) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=5.0) as kv,
        ):
            with pytest.raises(pbkv.RequestRejected, match="too_large"):
                await kv.put("a-key-longer-than-eight-bytes", "v")
            with pytest.raises(pbkv.RequestRejected, match="frame"):
                await kv.put("k", "x" * (17 * 1024 * 1024))
            with pytest.raises(TypeError):
                await kv.put("k", 5)  # type: ignore[arg-type]
            # Text that is not UTF-8 (a lone surrogate) is refused at once, never sent: the
            # size check counts its bytes, not a timeout later ("may or may not have ...").
            for key, value in (("\udc80", "v"), ("k", "v\udc80")):
                with pytest.raises(UnicodeEncodeError):
                    await kv.put(key, value)
            await kv.put("k", "still fine")

    asyncio.run(main())


def test_no_server_means_unavailable_after_the_timeout() -> None:
    async def main() -> None:
        async with (
            local_cluster(servers=0) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=0.5) as kv,
        ):
            started = time.monotonic()
            with pytest.raises(pbkv.Unavailable):
                await kv.put("k", "v")
            assert 0.4 < time.monotonic() - started < 3.0
        async with pbkv.AsyncClient("127.0.0.1:1", timeout=0.5) as kv:
            with pytest.raises(pbkv.Unavailable):
                await kv.view()

    asyncio.run(main())


def test_a_read_that_timed_out_says_it_did_not_complete_a_write_that_it_may_have() -> None:
    """Seen with `pbkv get k` while the primary and backup were paused: "no primary completed
    it in time (it may or may not have taken effect)", which means nothing for a read."""

    async def main() -> dict[str, str]:
        async with (
            local_cluster(servers=0) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=0.3) as kv,
        ):
            said = {}
            for name, operation in (
                ("get", kv.get("k")),
                ("put", kv.put("k", "v")),
                ("append", kv.append("k", "v")),
                ("delete", kv.delete("k")),
            ):
                with pytest.raises(pbkv.Unavailable) as error:
                    await operation
                said[name] = str(error.value)
            return said

    said = asyncio.run(main())
    assert said["get"].endswith(
        "(a read changes nothing: it simply did not complete; try it again, or check with pbkv "
        "status that the view's primary is alive)"
    )
    assert "taken effect" not in said["get"]
    for write in ("put", "append", "delete"):
        assert said[write].endswith("(it may or may not have taken effect)"), said[write]


@pytest.mark.parametrize("read", [True, False])
def test_an_operation_refused_before_it_was_sent_says_it_took_no_effect(read: bool) -> None:
    """A full client queue refuses an operation before anything is sent (N4 does not apply):
    "may or may not have taken effect" would send a careful user checking for nothing."""
    from pbkv.client import _outcome
    from pbkv.core.client_session import QUEUE_FULL_DETAIL
    from pbkv.core.effects import Deliver

    with pytest.raises(pbkv.Unavailable) as error:
        _outcome(Deliver(7, "unavailable", None, QUEUE_FULL_DETAIL), read=read)
    said = str(error.value)
    assert said.startswith("client queue full (it was never sent, so it took no effect"), said
    assert "may or may not" not in said


def test_a_refusal_says_a_write_may_have_taken_effect_only_once_the_cluster_had_answered() -> None:
    """On a first contact nothing reached any node, so "may have taken effect" would only
    worry a user who gave the wrong secret; after the cluster answered (the secret or a
    certificate changed under a running client) a write sent then may have."""
    from pbkv.core.messages import View, ViewReply

    async def refused_after(answers: list[ViewReply]) -> str:
        kv = pbkv.AsyncClient("127.0.0.1:1", timeout=30.0, token=None)
        host = kv._session_host()
        if answers:
            host.hub.receive("127.0.0.1:1", list(answers))
        pending = host.submit(Put("k", "v"))
        host.hub.refused("127.0.0.1:1", "refused: wrong secret")
        with pytest.raises(pbkv.AuthenticationFailed) as error:
            await pending
        await kv.close()
        return str(error.value)

    first = asyncio.run(refused_after([]))
    assert first == "authentication failed: 127.0.0.1:1: wrong secret", first
    view_reply = ViewReply(View(0))
    later = asyncio.run(refused_after([view_reply]))
    assert later.endswith(
        "(a write sent before, over a connection accepted then, may have taken effect)"
    )


def test_an_async_client_refuses_a_second_event_loop_or_thread() -> None:
    kv = pbkv.AsyncClient("127.0.0.1:1", timeout=0.2)

    async def put() -> None:
        await kv.put("k", "v")

    with pytest.raises(pbkv.Unavailable):
        asyncio.run(put())  # the first operation binds the client to this loop
    with pytest.raises(RuntimeError, match="bound to the event loop"):
        asyncio.run(put())  # that loop is closed now
    errors: list[BaseException] = []

    async def from_another_thread() -> None:
        try:
            await put()
        except BaseException as error:
            errors.append(error)

    async def main() -> None:
        with pytest.raises(pbkv.Unavailable):
            await put()
        await asyncio.to_thread(asyncio.run, from_another_thread())

    fresh = pbkv.AsyncClient("127.0.0.1:1", timeout=0.2)
    kv = fresh
    asyncio.run(main())
    assert len(errors) == 1 and "bound to the event loop" in str(errors[0])


def test_bad_client_arguments() -> None:
    with pytest.raises(ValueError):
        pbkv.AsyncClient("no-port")
    with pytest.raises(ValueError):
        pbkv.AsyncClient("127.0.0.1:7000", timeout=0)


async def admin_status(address: str) -> AdminStatusReply:
    reply = await send_admin_async(address, pbkv.runtime.admin.AdminStatus())
    assert isinstance(reply, AdminStatusReply)
    return reply


async def wait_primary(
    cluster: LocalCluster, name: str, after: int = 2, timeout: float = 10.0
) -> None:
    """Until ``name`` is primary of a view numbered above ``after``."""
    core = cluster.view_service
    async with asyncio.timeout(timeout):
        while not (core.view.primary == name and core.view.number > after):
            await asyncio.sleep(0.01)


def test_admin_status_and_a_partition_of_the_primary_from_everyone() -> None:
    """The cut-off primary is replaced; it can answer nothing but wrong_server (P3)."""

    async def main() -> None:
        async with (
            local_cluster(servers=2, admin=True) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=10.0) as kv,
        ):
            await kv.put("k", "old")
            primary, backup = await cluster.in_view_order()
            status = await admin_status(primary.node.admin_address)
            assert (status.role, status.keys) == ("primary", 1)
            assert status.view.number == cluster.view_service.view.number
            assert status.kind == "server" and status.pid > 0
            everyone = (cluster.address, backup.name)
            reply = await send_admin_async(primary.node.admin_address, Partition(everyone))
            assert isinstance(reply, AdminOk)
            await wait_primary(cluster, backup.name, status.view.number)
            await kv.put("k", "new")
            try:
                answer = await async_call(
                    primary.name, Request("raw", 0, 0, Get("k")), MESSAGES, 1.0
                )
            except TimeoutError:
                answer = None  # it cannot reach its backup: it answers nothing
            assert answer is None or (isinstance(answer, Reply) and answer.status != "ok")
            await send_admin_async(primary.node.admin_address, Heal())
            status = await admin_status(primary.node.admin_address)
            assert status.counters["fault_dropped_out"] > 0
            assert status.faults.blocked_in == ()
            assert await kv.get("k") == "new"

    asyncio.run(main())


def test_reads_complete_when_the_primary_is_cut_from_its_backup_for_good() -> None:
    """N5 / V10 with only reads: the primary and its backup no longer reach each other (both
    reach the view service). Each read waits for a read round the backup cannot echo; the
    primary reports the backup silent, the view service replaces it with the idle third server,
    and the reads are answered. Before 44b18cb each resend of the round restarted the backup's
    silence and the reads waited for good."""

    # A dead interval longer than forward_retry_ticks (20), as with the defaults (50 ticks):
    # with FAST's 10 ticks the silence is reported before the first resend, bug or not.
    timing = Timing(ping_interval_s=0.02, dead_pings=15)
    assert timing.replica_config(Limits()).backup_silent_ticks > ReplicaConfig().forward_retry_ticks

    async def main() -> None:
        async with (
            local_cluster(servers=3, admin=True, timing=timing) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=20.0) as kv,
        ):
            await kv.put("k", "v")
            primary, backup, spare = await cluster.in_view_order()
            reply = await send_admin_async(primary.node.admin_address, Partition((backup.name,)))
            assert isinstance(reply, AdminOk)
            await send_admin_async(backup.node.admin_address, Partition((primary.name,)))
            values = await asyncio.gather(*(kv.get("k") for _ in range(20)))
            assert values == ["v"] * 20
            view = cluster.viewserver.node.core.view
            assert view.primary == primary.name and view.backups == (spare.name,)

    asyncio.run(main())


def test_partition_in_one_direction_and_unreliable_network() -> None:
    async def main() -> None:
        async with local_cluster(servers=2, admin=True) as cluster:
            primary, backup = await cluster.in_view_order()
            before = cluster.view_service.view.number
            viewserver_admin = cluster.viewserver.node.admin_address
            await send_admin_async(viewserver_admin, Partition((primary.name,), "in"))
            await wait_primary(cluster, backup.name, before)  # its pings no longer count
            await send_admin_async(viewserver_admin, Heal())
            await send_admin_async(backup.node.admin_address, Unreliable(0.3, 5.0, seed=1))
            async with pbkv.AsyncClient(cluster.address, timeout=20.0) as kv:
                for i in range(30):
                    await kv.append("log", f"{i},")
                assert await kv.get("log") == "".join(f"{i}," for i in range(30))
            with pytest.raises(AdminRequestFailed):
                await send_admin_async(backup.node.admin_address, Unreliable(2.0, 0.0))

    asyncio.run(main())


def test_raw_request_to_idle_server_is_refused() -> None:
    async def main() -> None:
        async with local_cluster(servers=2, timing=STEADY) as cluster:
            backup = cluster.servers[1]
            answer = await async_call(
                backup.name, Request("raw", 0, 0, Put("k", "v")), MESSAGES, 2.0
            )
            assert isinstance(answer, Reply) and answer.status == "wrong_server"

    asyncio.run(main())


def test_metrics_count_operations_roles_and_failovers() -> None:
    scrape = scrape_metrics

    async def main() -> tuple[str, str, str]:
        async with local_cluster(servers=2, metrics=True, admin=True, timing=STEADY) as cluster:
            primary, backup = cluster.servers
            async with pbkv.AsyncClient(cluster.address, timeout=10.0) as kv:
                await asyncio.gather(*(kv.put(f"k{i}", "v") for i in range(20)))
                assert await kv.get("k1") == "v"
                text = await scrape(primary.node)
                await send_admin_async(primary.node.admin_address, Partition((cluster.address,)))
                await wait_primary(cluster, backup.name)
                await kv.put("after", "failover")
                return text, await scrape(backup.node), await scrape(cluster.viewserver.node)

    primary_text, backup_text, viewserver_text = asyncio.run(main())
    assert 'pbkv_operations_total{outcome="ok",type="put"} 20.0' in primary_text
    assert 'pbkv_operation_latency_seconds_count{type="get"} 1.0' in primary_text
    assert 'pbkv_role{role="primary"} 1.0' in primary_text
    assert "pbkv_view_number 2.0" in primary_text
    assert 'pbkv_state_transfers_total{side="sent"} 1.0' in primary_text
    assert "pbkv_forwards_total" in primary_text
    assert "pbkv_failovers" not in backup_text  # counted once, by the view service
    assert "pbkv_keys 21.0" in backup_text
    assert "pbkv_replication_round_trip_seconds_count" in primary_text
    assert 'pbkv_role{role="primary"} 1.0' in backup_text
    assert "pbkv_servers_declared_dead_total 1.0" in viewserver_text
    assert "pbkv_failovers_total 1.0" in viewserver_text
    assert "pbkv_operations" not in viewserver_text  # a view service answers no operation
    assert 'pbkv_build_info{kind="viewserver"' in viewserver_text
    assert "process_cpu_seconds_total" in viewserver_text


def test_clients_on_one_loop_share_connections_and_get_their_own_replies() -> None:
    async def main() -> None:
        async with local_cluster(servers=2, timing=STEADY) as cluster:
            clients = [pbkv.AsyncClient(cluster.address, timeout=10.0) for _ in range(4)]
            await asyncio.gather(
                *(
                    kv.append("shared", f"{i}.{n};")
                    for n in range(10)
                    for i, kv in enumerate(clients)
                )
            )
            hub = clients[0]._host.hub if clients[0]._host is not None else None
            assert hub is not None and len(hub.sessions) == 4
            assert all(kv._host is not None and kv._host.hub is hub for kv in clients)
            assert len(hub.network.peers) == 2  # the view service and the primary
            await clients[0].close()
            value = await clients[1].get("shared")
            assert value is not None
            tokens = value.split(";")[:-1]
            assert sorted(tokens) == sorted(f"{i}.{n}" for n in range(10) for i in range(4))
            for kv in clients[1:]:
                await kv.close()
            assert hub.network.closed and not hub.sessions

    asyncio.run(main())


def test_a_client_pointed_at_a_server_instead_of_the_view_service_fails_at_once() -> None:
    """Review: ``pbkv put k v --viewserver <a server>`` waited out its 30 s timeout and said
    the operation may have taken effect; the server now answers that it is not the view
    service, and the client raises WrongNode (exit 2) at once, its session still usable."""

    async def main() -> None:
        async with local_cluster(servers=2, timing=STEADY) as cluster:
            server = cluster.servers[0].name
            async with pbkv.AsyncClient(server, timeout=60.0) as wrong:
                with pytest.raises(pbkv.WrongNode, match="is a server, not the view service"):
                    await wrong.put("k", "v")
                with pytest.raises(pbkv.WrongNode):
                    await wrong.view()
            answer = await async_call(cluster.address, Request("c", 0, 0, Get("k")), MESSAGES, 2.0)
            assert isinstance(answer, ErrorReply) and "is the view service" in answer.reason
            async with pbkv.AsyncClient(cluster.address, timeout=10.0) as right:
                assert await right.get("k") is None  # nothing was done at the wrong node

    asyncio.run(main())


def test_a_client_that_half_closes_after_its_request_still_gets_the_reply() -> None:
    """Review: a client that sent its request and then shut down its sending side (as
    ``printf ... | nc`` does) had the write applied but never got the reply: the server
    closed on the end of stream. It now answers what it owes, then closes."""

    async def main() -> None:
        async with local_cluster(servers=2, timing=STEADY) as cluster:
            host, port = cluster.servers[0].name.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            security = tool_security()
            if security.token is not None:  # the suite's secret, if any

                async def read() -> bytes:
                    return await reader.read(4096)

                await handshake_async(read, writer.write, security.token, security, MESSAGES)
            writer.write(MESSAGES.frame(Request("half", 0, 0, Put("k", "v"))))
            writer.write_eof()
            header = await asyncio.wait_for(reader.readexactly(4), 10.0)
            payload = await reader.readexactly(int.from_bytes(header, "big"))
            reply = MESSAGES.decode(payload)
            assert isinstance(reply, Reply) and reply.status == "ok"
            assert await reader.read() == b""  # then it closes: nothing more is owed
            writer.close()

    asyncio.run(main())


def test_a_refusal_from_a_server_named_by_a_stale_view_does_not_end_the_operations() -> None:
    """Re-review: a "wrong node" or "refused" answer ended every operation even when it came
    from a primary's address learned from a view: another process may hold that address now
    (a view service restarted on the old primary's port), so the view is merely stale and the
    client must retry and ask for a new one. Only the view service's own answer ends them."""

    async def main() -> None:
        async with (
            local_cluster(servers=2, timing=STEADY) as cluster,
            pbkv.AsyncClient(cluster.address, timeout=10.0) as kv,
        ):
            await kv.put("k", "v0")
            host = kv._session_host()
            primary = cluster.servers[0].name
            pending = asyncio.ensure_future(kv.put("k", "v1"))
            await asyncio.sleep(0)
            host.hub.receive(primary, [ErrorReply("wrong node: a view service took this port")])
            host.hub.receive(primary, [ErrorReply("refused: wrong secret for the client role")])
            await pending  # completes: the answers came from a server a view named
            assert await kv.get("k") == "v1"
            failing = asyncio.ensure_future(kv.put("k", "v2"))
            await asyncio.sleep(0)
            host.hub.receive(cluster.address, [ErrorReply("wrong node: not the view service")])
            with pytest.raises(pbkv.WrongNode):
                await failing

    asyncio.run(main())
