"""The authentication gate of the transport in-process (docs/protocol.md §12): what a ``Network``
with a secret does with handshakes, refusals and their log lines, on 127.0.0.1 in one loop.

Found by a mutation audit: each test fails when the rule it names is broken in
``pbkv.runtime.connection`` or ``pbkv.runtime.host``, where the tests against real processes
(``test_auth.py``) stayed green.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import ssl

from pbkv.core.messages import AnyMessage, ErrorReply, Forward, GetView
from pbkv.runtime.auth import NONCE_BYTES, ClientHandshake, HandshakeReader, ServerSecrets
from pbkv.runtime.config import NetworkLimits
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.rpc import handshake_async
from pbkv.runtime.security import Security, client_security
from pbkv.wire import MESSAGES, FrameReader

from .test_network_bounds import Received, count, serving, until

PEER = b"peer-secret-0123456789abcdef"
CLIENT = b"client-secret-0123456789abcdef"
GATED = Security(None, "peer", ServerSecrets(PEER, CLIENT))
"""A listener that demands the peer secret, or the client token for the client role."""


async def authenticated(
    port: int, token: bytes, role: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    security = client_security(token, None, role)  # type: ignore[arg-type]
    await handshake_async(lambda: reader.read(4096), writer.write, token, security, MESSAGES)
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the listener sends before it closes (it must, within 2 s)."""
    return await asyncio.wait_for(reader.read(), 2.0)


def lines(log: io.StringIO, event: str) -> int:
    return sum(f" {event} " in line for line in log.getvalue().splitlines())


def test_refused_handshakes_write_one_line_per_second_and_count_every_one() -> None:
    """A1: a connection that skips the handshake gets one error frame and is closed, counted
    (``connections_refused_auth``) and logged once per second at most, whoever sends it."""

    async def main() -> tuple[list[object], int, int, Received]:
        network, port, batches, log = await serving(NetworkLimits(), GATED)
        answers: list[object] = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(MESSAGES.frame(GetView()))
            answers += FrameReader(MESSAGES).feed(await until_closed(reader))
            writer.close()
        await until(lambda: network.counters.get("connections_refused_auth") == 3)
        await network.close()
        return (
            answers,
            network.counters["connections_refused_auth"],
            lines(log, "connection_refused"),
            batches,
        )

    answers, refused, logged, batches = asyncio.run(main())
    assert len(answers) == 3 and all(isinstance(answer, ErrorReply) for answer in answers)
    assert (refused, logged, batches) == (3, 1, [])


def test_peer_messages_on_client_token_connections_write_one_line_per_second() -> None:
    """A3: a client-token connection that sends a peer's message is closed, counted
    (``messages_refused_role``) and logged once per second at most (``message_refused``)."""
    forward = MESSAGES.frame(Forward(1, "p:1", 0, ()))

    async def main() -> tuple[list[bytes], int, int, Received]:
        network, port, batches, log = await serving(NetworkLimits(), GATED)
        ends = []
        for _ in range(3):
            reader, writer = await authenticated(port, CLIENT, "client")
            writer.write(forward)
            ends.append(await until_closed(reader))
            writer.close()
        await until(lambda: network.counters.get("messages_refused_role") == 3)
        await network.close()
        return (
            ends,
            network.counters["messages_refused_role"],
            lines(log, "message_refused"),
            batches,
        )

    ends, refused, logged, batches = asyncio.run(main())
    assert ends == [b""] * 3 and (refused, logged, batches) == (3, 1, [])


def test_a_frame_that_follows_the_proof_in_one_segment_is_read() -> None:
    """A1: the handshake ends at the proof; what arrived behind it in the same segment is the
    first protocol frame, decoded once the proof passed (not dropped with the handshake)."""

    async def main() -> list[AnyMessage]:
        network, port, batches, _ = await serving(NetworkLimits(), GATED)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        handshake = ClientHandshake(PEER, "peer", secrets.token_bytes(NONCE_BYTES))
        writer.write(handshake.hello())
        payloads = HandshakeReader()
        while (challenge := payloads.next()) is None:
            payloads.feed(await reader.read(4096))
        writer.write(handshake.feed(challenge) + MESSAGES.frame(GetView()))
        await until(lambda: count(batches) == 1)
        writer.close()
        await network.close()
        return [message for _, messages in batches for message in messages]

    assert asyncio.run(main()) == [GetView()]


def test_an_outbound_handshake_that_times_out_is_not_a_refusal_for_good() -> None:
    """A1/A4: a peer that does not finish the handshake within ``handshake_timeout_s`` is a
    lost message (retried), not a refusal for good: ``on_refused`` (which fails a client's
    operations at once) is told only of a wrong secret or TLS, never of a slow peer."""

    async def main() -> tuple[list[tuple[str, str]], int]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads the hello, never answers

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        security = client_security(PEER, None, "peer")
        security.handshake_timeout_s = 0.2
        logger = EventLogger("server", "s", lambda: 0, stream=io.StringIO())
        network = Network(NetworkLimits(), logger, security=security)
        refusals: list[tuple[str, str]] = []
        network.on_refused = lambda peer, reason: refusals.append((peer, reason))
        network.send(target, GetView())
        await until(lambda: network.counters.get("connections_refused_auth", 0) >= 1)
        await network.close()
        server.close()
        return refusals, network.counters["connections_refused_auth"]

    refusals, refused = asyncio.run(main())
    assert refusals == [] and refused >= 1


def test_with_tls_alone_plaintext_is_refused_before_anything_is_decoded() -> None:
    """A1: a listener with TLS and no secret still gates every connection: plaintext gets one
    plaintext error frame and is closed; nothing reaches the core."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    async def main() -> tuple[list[object], Received, int]:
        network, port, batches, _ = await serving(NetworkLimits(), Security(server_tls=context))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(MESSAGES.frame(GetView()))
        answers: list[object] = list(FrameReader(MESSAGES).feed(await until_closed(reader)))
        writer.close()
        await until(lambda: network.counters.get("connections_refused_auth") == 1)
        await network.close()
        return answers, batches, network.counters["connections_refused_auth"]

    answers, batches, refused = asyncio.run(main())
    assert len(answers) == 1 and isinstance(answers[0], ErrorReply)
    assert (batches, refused) == ([], 1)
