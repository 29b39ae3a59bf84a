"""The RESP client: encoding and incremental parsing; against a real redis-server if installed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from pbkv.bench.backends import RedisBackend, open_redis
from pbkv.bench.redis_pair import RedisPair, info_field, redis_command
from pbkv.bench.resp import (
    RespConnection,
    RespError,
    RespProtocolError,
    encode_command,
    parse_reply,
)

REPLIES = (
    (b"+OK\r\n", "OK"),
    (b"-ERR wrong\r\n", RespError("ERR wrong")),
    (b":42\r\n", 42),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*3\r\n:1\r\n$2\r\nab\r\n*1\r\n+x\r\n", [1, b"ab", ["x"]]),
)


def test_encode_command_makes_an_array_of_bulk_strings() -> None:
    assert encode_command(("SET", "k", b"v\r\n", 7)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n"
    )


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_parse_reply_whole(data: bytes, expected: object) -> None:
    parsed = parse_reply(data, 0)
    assert parsed is not None
    value, end = parsed
    if isinstance(expected, RespError):
        assert isinstance(value, RespError)
        assert str(value) == str(expected)
    else:
        assert value == expected
    assert end == len(data)


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_parse_reply_waits_for_every_prefix(data: bytes, expected: object) -> None:
    for cut in range(len(data)):
        assert parse_reply(data[:cut], 0) is None


def test_parse_reply_rejects_garbage() -> None:
    with pytest.raises(RespProtocolError):
        parse_reply(b"?what\r\n", 0)
    with pytest.raises(RespProtocolError):
        parse_reply(b":12x\r\n", 0)
    with pytest.raises(RespProtocolError):
        parse_reply(b"$2\r\nabcd\r\n", 0)


def test_pipelined_replies_reach_their_waiters_in_order() -> None:
    async def scenario() -> None:
        connection = RespConnection()
        sent: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                sent.append(data)

            def get_extra_info(self, name: str) -> None:
                return None

        connection.connection_made(Transport())  # type: ignore[arg-type]
        first = connection.request(b"a", 2)
        second = connection.request(b"b", 1)
        # Replies arrive split at awkward places.
        connection.data_received(b"+OK\r\n:")
        connection.data_received(b"1\r\n$3\r\nab")
        assert not first.done() or await first == ["OK", 1]
        connection.data_received(b"c\r\n")
        assert await first == ["OK", 1]
        assert await second == [b"abc"]
        assert sent == [b"a", b"b"]
        third = connection.request(b"c")
        connection.connection_lost(None)
        with pytest.raises(ConnectionError):
            await third
        with pytest.raises(ConnectionError):
            connection.request(b"d")

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def redis_pair() -> Iterator[RedisPair]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisPair() as pair:
        yield pair


def test_redis_pair_replicates(redis_pair: RedisPair) -> None:
    replica = redis_command(redis_pair.host, redis_pair.replica_port, "INFO", "replication")
    assert info_field(replica, "master_link_status") == "up"
    assert info_field(replica, "role") == "slave"


def test_redis_backend_writes_reach_the_replica(redis_pair: RedisPair) -> None:
    async def scenario() -> None:
        backend = await open_redis(redis_pair.primary_address)
        assert isinstance(backend, RedisBackend)
        await asyncio.gather(*(backend.write(f"resp-test-{i}", f"v{i}") for i in range(200)))
        await backend.read("resp-test-0")
        assert await backend.connection.execute("GET", "resp-test-199") == b"v199"
        with pytest.raises(RespError):
            await backend.connection.execute("NOSUCHCOMMAND")
        await backend.close()

    asyncio.run(scenario())
    # WAIT 1 0 returned, so the replica has them.
    value = redis_command(redis_pair.host, redis_pair.replica_port, "GET", "resp-test-199")
    assert value == b"v199"


def test_a_redis_primary_with_two_replicas_answers_wait_2_with_both() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisPair(replicas=2) as pair:
        assert len(pair.replica_ports) == 2

        async def scenario() -> None:
            backend = await open_redis(pair.primary_address, replicas=2)
            await backend.write("two", "replicas")  # raises unless WAIT 2 0 counted both
            await backend.close()

        asyncio.run(scenario())
        for port in pair.replica_ports:
            assert redis_command(pair.host, port, "GET", "two") == b"replicas"


class _Sink:
    """A transport that only remembers that it was aborted."""

    aborted = False

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> None:
        return None


@pytest.mark.parametrize("native", [False, True], ids=["python", "hiredis"])
def test_both_parsers_hand_pipelined_replies_to_their_requests_in_order(native: bool) -> None:
    async def main() -> None:
        connection = RespConnection(native)
        assert connection.parser == ("hiredis" if native else "python")
        connection.connection_made(_Sink())  # type: ignore[arg-type]
        first = connection.request(b"", 2)
        second = connection.request(b"", 1)
        stream = b"+OK\r\n:1\r\n$5\r\nhello\r\n"
        for index in range(len(stream)):  # one byte at a time: replies split anywhere
            connection.data_received(stream[index : index + 1])
        ok, replicas = await first
        assert ok in ("OK", b"OK") and replicas == 1
        assert await second == [b"hello"]
        error = connection.request(b"", 1)
        connection.data_received(b"-ERR no\r\n")
        (reply,) = await error
        assert isinstance(reply, RespError) and str(reply) == "ERR no"
        transport = _Sink()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"?garbage\r\n")
        assert transport.aborted

    asyncio.run(main())
