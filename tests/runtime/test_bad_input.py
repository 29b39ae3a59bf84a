"""Bad bytes on any port close only that connection, with a logged reason; service goes on."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest

from pbkv.core.messages import Dump, DumpReply, Forward, GetView, ViewReply
from pbkv.runtime.admin import ADMIN, AdminStatus, AdminStatusReply
from pbkv.runtime.rpc import async_call
from pbkv.wire import FRAME_HEADER, MESSAGES
from tests import authed

from .inprocess import local_cluster


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


BAD_INPUTS = {
    "garbage": b"\x00\x00\x00\x05hello, this is not msgpack at all",
    "oversized": FRAME_HEADER.pack(0x7FFF_FFFF) + b"x" * 64,
    "unknown_type": frame(msgspec.msgpack.encode(["no-such-tag", 1, 2])),
    "wrong_field_type": frame(msgspec.msgpack.encode(["rq", 123, "seq", 0, ["get", "k"]])),
}


async def closed_by_peer(address: str, payload: bytes, half_close: bool = False) -> bool:
    """Send ``payload``; True when the peer closes the connection without answering."""
    reader, writer = await authed.open_connection(address)
    writer.write(payload)
    if half_close:
        writer.write_eof()
    try:
        async with asyncio.timeout(5.0):
            data = await reader.read()
    except ConnectionResetError:
        data = b""
    writer.close()
    return data == b""


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_frames_close_the_connection_on_every_port(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        async with local_cluster(servers=1, admin=True) as cluster:
            viewserver, server = cluster.viewserver, cluster.servers[0]
            ports = [viewserver.name, server.name]
            ports += [node.node.admin_address for node in (viewserver, server)]
            for address in ports:
                assert await closed_by_peer(address, BAD_INPUTS[kind]), address
            reply = await async_call(viewserver.name, GetView(), MESSAGES)
            assert isinstance(reply, ViewReply) and reply.view.primary == server.name
            dump = await async_call(server.name, Dump(), MESSAGES)
            assert isinstance(dump, DumpReply) and dump.role == "primary"
            status = await async_call(server.node.admin_address, AdminStatus(), ADMIN)
            assert isinstance(status, AdminStatusReply)

    asyncio.run(main())
    errors = capsys.readouterr().err
    assert errors.count("connection_closed") >= 2 and "frame rejected" in errors
    assert "fatal" not in errors


def test_truncated_frame_is_reported_when_the_stream_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> None:
        async with local_cluster(servers=1) as cluster:
            truncated = FRAME_HEADER.pack(100) + b"only ten.."
            assert await closed_by_peer(cluster.address, truncated, half_close=True)
            reply = await async_call(cluster.address, GetView(), MESSAGES)
            assert isinstance(reply, ViewReply)

    asyncio.run(main())
    assert "truncated frame" in capsys.readouterr().err


def test_a_message_for_another_kind_of_node_is_ignored_with_a_log_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> None:
        async with local_cluster(servers=1) as cluster:
            reader, writer = await authed.open_connection(cluster.address)
            writer.write(MESSAGES.frame(Forward(1, "nobody:1", 0, ())))
            writer.write(MESSAGES.frame(GetView()))
            header = await reader.readexactly(FRAME_HEADER.size)
            reply = MESSAGES.decode(await reader.readexactly(FRAME_HEADER.unpack(header)[0]))
            assert isinstance(reply, ViewReply)  # same connection still served
            writer.close()

    asyncio.run(main())
    assert "message_ignored type=Forward" in capsys.readouterr().err


def test_an_exception_escaping_the_core_stops_the_process_with_status_70(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> int:
        async with local_cluster(servers=1) as cluster:
            viewserver = cluster.viewserver
            core = viewserver.node.core

            def broken(source: str, message: object, out: object) -> None:
                raise AssertionError("V0: a deliberately broken invariant")

            core.on_message = broken  # type: ignore[method-assign]
            with contextlib.suppress(OSError, TimeoutError):
                await async_call(viewserver.name, GetView(), MESSAGES, 1.0)
            return await viewserver.task

    assert asyncio.run(main()) == 70
    errors = capsys.readouterr().err
    assert " fatal " in errors and "V0: a deliberately broken invariant" in errors
    assert "Traceback" in errors
