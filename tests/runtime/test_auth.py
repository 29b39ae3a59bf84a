"""Authentication against real processes: whoever lacks the secret gets nothing through.

Every attack runs while an honest client keeps writing; afterwards the store (read by a good
client and by dumps) holds exactly the honest writes, the view is the one before the attack, and
the processes counted and logged the refusals (rate-limited).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pbkv
from pbkv.core.messages import (
    ErrorReply,
    Forward,
    ForwardReply,
    GetView,
    Ping,
    Put,
    Request,
    View,
    ViewReply,
)
from pbkv.runtime import rpc
from pbkv.runtime.admin import ADMIN, AdminError, AdminStatus, AdminStatusReply, send_admin
from pbkv.runtime.auth import NONCE_BYTES, TOKEN_ENV, ClientHandshake, HandshakeReader
from pbkv.runtime.config import parse_address
from pbkv.runtime.security import Security, client_security
from pbkv.wire import FRAME_HEADER, MESSAGES, Codec
from tests.conftest import TEST_TOKEN, Cluster, NodeProcess

Factory = Callable[..., Cluster]
CLIENT_TOKEN = "client-only-secret-0123456789"
FORGED_SERVER = "10.9.9.9:1"
STEADY = {"dead_pings": 40}  # a loaded machine must not change views during these tests


class Honest:
    """A client writing ``honest-N`` keys in a thread until stopped; every write must succeed."""

    def __init__(self, cluster: Cluster, token: str = TEST_TOKEN) -> None:
        self.kv = pbkv.Client(cluster.address, timeout=10.0, token=token)
        self.written = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.kv.put(f"honest-{self.written}", "v")
                self.written += 1
                time.sleep(0.005)
        except BaseException as error:
            self.error = error

    def __enter__(self) -> Honest:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(15)
        self.kv.close()
        assert self.error is None, self.error
        assert self.written > 0


@pytest.fixture
def steady(cluster_factory: Factory) -> Cluster:
    return cluster_factory(**STEADY)


@pytest.fixture
def honest(steady: Cluster) -> Iterator[Honest]:
    with Honest(steady) as writer:
        yield writer


def raw_exchange(address: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` without any handshake; everything the peer sends until it closes."""
    received = b""
    with socket.create_connection(parse_address(address), timeout=timeout) as sock:
        sock.sendall(data)
        while chunk := sock.recv(4096):
            received += chunk
    return received


def frames(data: bytes) -> list[bytes]:
    """The payloads of the frames in ``data``."""
    found = []
    while len(data) >= FRAME_HEADER.size:
        (length,) = FRAME_HEADER.unpack_from(data)
        found.append(data[FRAME_HEADER.size : FRAME_HEADER.size + length])
        data = data[FRAME_HEADER.size + length :]
    return found


def first_frame(data: bytes) -> object:
    return MESSAGES.decode(frames(data)[0])


def wait_for_log(node: NodeProcess, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log of {node.name}"
        time.sleep(0.05)


def forged_messages(cluster: Cluster) -> list[object]:
    view = cluster.view()
    return [
        Forward(view.number, view.primary or "", 0, (Request("evil", 1, 0, Put("forged", "x")),)),
        ForwardReply(view.number, 1_000_000, True),
        Ping(cluster.servers[-1].name, 0, 1),
        Ping(FORGED_SERVER, 0, 1),
    ]


def counter(cluster: Cluster, node_admin: str | None, name: str) -> int:
    assert node_admin is not None
    reply = send_admin(node_admin, AdminStatus())
    assert isinstance(reply, AdminStatusReply)
    return reply.counters.get(name, 0)


def assert_nothing_forged(cluster: Cluster, view: View, token: str = TEST_TOKEN) -> None:
    """No forged key anywhere, no forged server known, the same primary as before."""
    with pbkv.Client(cluster.address, timeout=10.0, token=token) as kv:
        assert kv.get("forged") is None
    for server in cluster.servers:
        assert "forged" not in cluster.dump(server)["keys"]
    status = cluster.status()
    assert FORGED_SERVER not in {info.name for info in status.servers}
    assert status.view.primary == view.primary


def test_forged_and_unauthenticated_messages_on_every_port_get_one_error_frame(
    cluster_factory: Factory,
) -> None:
    cluster = cluster_factory(admin=True, **STEADY)
    view = cluster.view()
    nodes = [cluster.viewserver, *cluster.servers]
    ports: list[tuple[str, Codec[Any]]] = [(node.address, MESSAGES) for node in nodes]
    ports += [(node.admin or "", ADMIN) for node in nodes]
    with Honest(cluster):
        for address, codec in ports:
            for message in [*forged_messages(cluster), GetView()]:
                answer = frames(raw_exchange(address, MESSAGES.frame(message)))  # type: ignore[arg-type]
                assert len(answer) == 1, f"{address} did not answer one error frame"
                reply = codec.decode(answer[0])
                assert isinstance(reply, ErrorReply | AdminError), reply
                assert "presented no secret" in reply.reason
    assert_nothing_forged(cluster, view)
    primary = cluster.primary()
    assert counter(cluster, primary.admin, "connections_refused_auth") >= 5
    wait_for_log(primary, "connection_refused")
    status = subprocess.run(
        [sys.executable, "-m", "pbkv", "status", "--viewserver", cluster.address],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"view {view.number}" in status.stdout


def test_no_secret_and_a_wrong_secret_are_refused_with_the_reason(
    steady: Cluster, honest: Honest
) -> None:
    cluster = steady
    for address in (cluster.address, cluster.primary().address):
        reply = rpc.call(address, GetView(), MESSAGES, 5.0, Security())  # no secret
        assert isinstance(reply, ErrorReply) and "presented no secret" in reply.reason
        wrong = client_security("a-wrong-secret-0123456789", None, "peer")
        with pytest.raises(rpc.AuthRefused, match="does not hold"):  # nor is it revealed
            rpc.call(address, GetView(), MESSAGES, 5.0, wrong)
    # A refusal for good fails the operation at once, not after its 60 s timeout (review).
    with (
        pbkv.Client(cluster.address, timeout=60.0, token="a-wrong-secret-0123456789") as bad,
        pytest.raises(pbkv.AuthenticationFailed, match="does not hold our secret"),
    ):
        bad.put("forged", "x")
    assert cluster.client().get("forged") is None


def test_a_client_without_a_secret_fails_at_once_and_stays_usable(
    steady: Cluster, honest: Honest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No secret against a cluster that has one: the server's refusal frame ends the
    operation with AuthenticationFailed (exit 4 on the command line) instead of a timeout;
    the client can still be used (a later operation gets the same answer, not a broken
    session)."""
    with monkeypatch.context() as environment:
        environment.delenv(TOKEN_ENV, raising=False)
        bare = pbkv.Client(steady.address, timeout=60.0, token=None)
    with bare:
        for attempt in ("first", "second"):
            says = r"presented no secret.*--auth-token-file FILE or \$PBKV_AUTH_TOKEN"
            with pytest.raises(pbkv.AuthenticationFailed, match=says):
                bare.put(f"unauthenticated-{attempt}", "x")
    assert steady.client().get("unauthenticated-first") is None


def test_a_replayed_handshake_is_refused(steady: Cluster, honest: Honest) -> None:
    cluster = steady
    host, port = parse_address(cluster.primary().address)
    handshake = ClientHandshake(TEST_TOKEN.encode(), "peer", os.urandom(NONCE_BYTES))
    captured = handshake.hello()
    with socket.create_connection((host, port), timeout=5.0) as sock:
        sock.sendall(captured)
        reader = HandshakeReader()
        while (payload := reader.next()) is None:
            reader.feed(sock.recv(4096))
        proof = handshake.feed(payload)
        captured += proof
    forged = MESSAGES.frame(Request("evil", 1, 0, Put("forged", "x")))
    answer = frames(raw_exchange(cluster.primary().address, captured + forged))
    assert len(answer) == 2  # a challenge with a new nonce, then the refusal
    reply = MESSAGES.decode(answer[-1])
    assert isinstance(reply, ErrorReply) and "wrong secret" in reply.reason
    assert cluster.client().get("forged") is None


def test_a_client_token_may_not_send_peer_messages(
    cluster_factory: Factory, tmp_path: Path
) -> None:
    token_file = tmp_path / "client-token"
    token_file.write_text(CLIENT_TOKEN)
    cluster = cluster_factory(
        admin=True, node_args=("--client-token-file", str(token_file)), **STEADY
    )
    view = cluster.view()
    with Honest(cluster, token=CLIENT_TOKEN) as writer:
        for address in (cluster.primary().address, cluster.backup().address, cluster.address):
            for message in forged_messages(cluster):
                channel = rpc.Channel(address, MESSAGES, 2.0, client_security(CLIENT_TOKEN, None))
                with channel, pytest.raises(ConnectionError):
                    channel.send(message)  # type: ignore[arg-type]
                    channel.receive()
        with pytest.raises(rpc.AuthRefused):  # nor pretend to be a peer
            rpc.call(
                cluster.address,
                GetView(),
                MESSAGES,
                2.0,
                client_security(CLIENT_TOKEN, None, "peer"),
            )
    assert writer.written > 0
    assert_nothing_forged(cluster, view, CLIENT_TOKEN)
    assert counter(cluster, cluster.backup().admin, "messages_refused_role") >= 4
    wait_for_log(cluster.backup(), "message_refused")
    # refused by the client-only decoder (by tag), not after decoding the whole message
    wait_for_log(cluster.backup(), "not a client message on a client-token connection")
    with pytest.raises(rpc.AuthRefused):  # the admin port wants the peer secret
        send_admin(
            cluster.backup().admin or "", AdminStatus(), 2.0, client_security(CLIENT_TOKEN, None)
        )


def test_a_silent_connection_is_closed_after_the_handshake_timeout(
    cluster_factory: Factory,
) -> None:
    cluster = cluster_factory(servers=1, node_args=("--handshake-timeout-s", "0.5"))
    host, port = parse_address(cluster.address)
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=10.0) as sock:
        data = sock.recv(4096)
    assert 0.4 < time.monotonic() - started < 5.0
    assert isinstance(first_frame(data), ErrorReply)
    wait_for_log(cluster.viewserver, "handshake not completed within 0.5 s")


def test_a_flood_of_bad_handshakes_writes_a_bounded_log(steady: Cluster, honest: Honest) -> None:
    cluster = steady
    for _ in range(300):
        raw_exchange(cluster.address, b"\0\0\0\x03abc")
    lines = [
        line for line in cluster.viewserver.log_text().splitlines() if "connection_refused" in line
    ]
    assert 1 <= len(lines) <= 20, len(lines)


def _node(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbkv", "viewserver", "--no-data-dir", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )


def test_without_a_secret_only_loopback_unless_insecure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    refused = _node(["--listen", "0.0.0.0:0"], env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "loopback only" in refused.stderr
    short = tmp_path / "short"
    short.write_text("too-short")
    bad = _node(["--listen", "127.0.0.1:0", "--auth-token-file", str(short)], env)
    assert bad.returncode == 2 and "fewer than 16" in bad.stderr and "Traceback" not in bad.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "pbkv", "viewserver", "--no-data-dir", "--listen", "0.0.0.0:0",
         "--insecure"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(3)]
        assert any("auth_disabled" in line for line in lines), lines
    finally:
        process.kill()
        process.wait()


def test_a_secret_presented_to_a_node_without_one_fails_at_once_with_the_reason() -> None:
    """The walk-through review: after `pbkv cluster up` and `down`, ./.pbkv/auth-token stays,
    and `pbkv put` against a cluster started by hand without a secret presented it: the node
    dropped the handshake as an undecodable frame, so the put retried for its whole 30 s and
    ended 'no primary completed it in time' (exit 3). The node now answers with its refusal."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "pbkv", "viewserver", "--no-data-dir", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = ""
        while " listening address=" not in line:
            line = process.stderr.readline()
            assert line, "the view service exited"
        address = line.split(" listening address=")[1].split()[0]
        started = time.monotonic()
        with (
            pbkv.Client(address, timeout=60.0, token=TEST_TOKEN) as kv,
            pytest.raises(pbkv.AuthenticationFailed, match="this node holds no secret"),
        ):
            kv.put("k", "v")
        assert time.monotonic() - started < 10.0
        with pytest.raises(rpc.AuthRefused, match="refused the connection: this node holds no"):
            rpc.call(address, GetView(), MESSAGES, 5.0, client_security(TEST_TOKEN, None, "peer"))
        reply = rpc.call(address, GetView(), MESSAGES, 5.0, Security())  # without: served
        assert isinstance(reply, ViewReply)
    finally:
        process.kill()
        process.wait()


def test_a_cluster_mid_rotation_serves_and_replicates_under_either_secret(tmp_path: Path) -> None:
    """The three steps of a rotation from A to B (guide §12b) side by side, as during a rolling
    restart: the view service presents A accepting B (step 1), one server B accepting A (step
    2), the other A accepting B (step 1). Every link passes, clients with A or B are served and
    both servers hold every write; a secret that is neither is still refused."""
    old, new = tmp_path / "a.secret", tmp_path / "b.secret"
    old.write_text(TEST_TOKEN)
    new.write_text("pbkv-rotated-secret-0123456789abcdef")
    step1 = ("--auth-token-file", str(old), "--auth-accept-token-file", str(new))
    step2 = ("--auth-token-file", str(new), "--auth-accept-token-file", str(old))
    cluster = Cluster(tmp_path / "cluster", **STEADY)  # type: ignore[arg-type]
    cluster.viewserver.args += list(step1)
    try:
        cluster.start(servers=0)
        for step in (step2, step1):
            cluster.server_args = step
            cluster.add_server()
        for index, token in enumerate((TEST_TOKEN, new.read_text(), TEST_TOKEN)):
            with pbkv.Client(cluster.address, timeout=15.0, token=token) as kv:
                kv.put(f"rotating-{index}", token[:4])
                assert kv.get(f"rotating-{index}") == token[:4]
        dumps = [cluster.dump(server) for server in cluster.servers]
        assert {dump["role"] for dump in dumps} == {"primary", "backup"}
        assert dumps[0]["keys"] == dumps[1]["keys"] and len(dumps[0]["keys"]) == 3, dumps
        with (
            pbkv.Client(cluster.address, timeout=15.0, token="neither-secret-0123456789") as kv,
            pytest.raises(pbkv.AuthenticationFailed),
        ):
            kv.get("rotating-0")
        assert "rotating=peer" in cluster.servers[0].log_text()
    finally:
        cluster.close()
