"""The dashboard's server against hostile requests, in raw HTTP over a socket: a DNS-rebinding
page (a foreign ``Host``, or a foreign ``Origin`` on a fault) is refused 403 and logged once, the
page's own names pass wherever it listens, and a malformed ``Content-Length`` or action body is
answered 400/413 with no exception escaping the server."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pbkv.dashboard.server import Dashboard, DashboardLimits, HostRule, host_port
from tests.dashboard.test_dashboard_server import FakeSource

HEAL = b'{"action":"heal"}'
FOREIGN = "attacker.example"


def _serve(
    directory: Path, listen_host: str, checks: Callable[[int], None]
) -> tuple[str, list[dict[str, Any]]]:
    """Run a dashboard on ``listen_host`` while ``checks(port)`` runs in a thread; returns its
    log and every exception the event loop saw escape (there must be none)."""
    escaped: list[dict[str, Any]] = []
    log = io.StringIO()

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: escaped.append(ctx))
        dashboard = Dashboard(FakeSource(), directory, DashboardLimits(poll_interval_s=0.05))
        dashboard.logger.stream = log
        port = await dashboard.listen(listen_host, 0)
        try:
            await asyncio.to_thread(checks, port)
        finally:
            await dashboard.close()

    asyncio.run(main())
    return log.getvalue(), escaped


def _send(address: tuple[str, int], data: bytes) -> bytes:
    """Send one raw request; the whole answer (empty if the server closed without one)."""
    with socket.create_connection(address, timeout=5) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def _action(host: str, origin: str | None = None, body: bytes = HEAL) -> bytes:
    headers = {"Host": host, "Content-Type": "application/json"}
    headers |= {"Origin": origin} if origin is not None else {}
    return _request("POST", "/api/action", headers | {"Content-Length": str(len(body))}, body)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer.split()[1])


def test_a_rebinding_page_is_refused_and_logged_once(tmp_path: Path) -> None:
    def checks(port: int) -> None:
        address, ours = ("127.0.0.1", port), f"127.0.0.1:{port}"
        foreign = f"{FOREIGN}:{port}"
        # what a page of attacker.example sends once its name resolves to 127.0.0.1
        answer = _send(address, _action(foreign, f"http://{foreign}"))
        assert _status(answer) == 403 and b"Host" in answer and ours.encode() in answer
        for path in ("/api/snapshot", "/events", "/"):
            assert _status(_send(address, _request("GET", path, {"Host": foreign}))) == 403
        for host in (f"127.0.0.1:{port + 1}", f"127.0.0.1.{FOREIGN}:{port}", ""):
            assert _status(_send(address, _request("GET", "/api/snapshot", {"Host": host}))) == 403
        # our Host, but another site's page (or a sandboxed one) posting to it
        for origin in (f"http://{foreign}", "null", f"https://{ours}", f"http://{ours}/x"):
            assert _status(_send(address, _action(ours, origin))) == 403
        # the page's own names pass; no cluster in tmp_path, so the fault itself is refused 409
        for host in (ours, f"localhost:{port}", f"[::1]:{port}", f"LocalHost:{port}"):
            assert _status(_send(address, _request("GET", "/api/snapshot", {"Host": host}))) == 200
            assert _status(_send(address, _action(host, f"http://{host}"))) == 409
        assert _status(_send(address, _action(ours))) == 409  # no Origin: not a browser's page

    log, escaped = _serve(tmp_path, "127.0.0.1", checks)
    assert not escaped
    refusals = [line for line in log.splitlines() if "request_refused" in line]
    assert len(refusals) == 1, log  # a burst of refusals writes one line a second at most
    assert "header=host" in refusals[0] and FOREIGN in refusals[0]


def test_a_dashboard_on_every_interface_answers_to_the_address_it_was_reached_at(
    tmp_path: Path,
) -> None:
    """Linux routes all of 127/8 to loopback: 127.0.0.2 stands for another interface's IP."""

    def checks(port: int) -> None:
        address = ("127.0.0.2", port)
        for host, status in ((f"127.0.0.2:{port}", 200), (f"127.0.0.3:{port}", 403)):
            assert (
                _status(_send(address, _request("GET", "/api/snapshot", {"Host": host}))) == status
            )
        assert _status(_send(address, _request("GET", "/", {"Host": f"0.0.0.0:{port}"}))) == 403

    assert not _serve(tmp_path, "0.0.0.0", checks)[1]


@pytest.mark.parametrize(
    ("header", "local", "allowed"),
    [
        ("127.0.0.1:8080", "127.0.0.1", True),
        ("localhost:8080", "127.0.0.1", True),
        ("[::1]:8080", "::1", True),
        ("dash.lan:8080", "10.0.0.5", True),  # the name it was told to listen on
        ("10.0.0.5:8080", "::ffff:10.0.0.5", True),  # the address reached, IPv4 on a v6 socket
        ("10.0.0.6:8080", "10.0.0.5", False),
        ("other.lan:8080", "10.0.0.5", False),
        ("localhost:8081", "127.0.0.1", False),
        ("localhost", "127.0.0.1", False),  # port 80
        ("localhost:8080@evil", "127.0.0.1", False),
        ("localhost:99999", "127.0.0.1", False),
    ],
)
def test_host_rule(header: str, local: str, allowed: bool) -> None:
    assert HostRule("dash.lan", 8080).allows_host(header, local) is allowed


def test_host_port_defaults_to_80() -> None:
    assert host_port("LOCALHOST") == ("localhost", 80)
    assert host_port("[::1]:81") == ("::1", 81)
    assert host_port("[::1") is None and host_port("a:b") is None


@pytest.mark.parametrize(
    ("length", "status"),
    [
        ("abc", 400),
        ("-1", 400),
        ("1_0", 400),
        ("+5", 400),
        ("", 400),
        ("\u00b2", 400),  # a digit to str.isdigit, not to int()
        ("99999999999999999999", 413),
        ("9" * 5000, 413),  # longer than int() converts
        ("4097", 413),
    ],
)
def test_a_malformed_content_length_is_answered_never_raised(
    tmp_path: Path, length: str, status: int
) -> None:
    def checks(port: int) -> None:
        head = f"POST /api/action HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        request = (head + f"Content-Length: {length}\r\n\r\n").encode("latin-1")
        answer = _send(("127.0.0.1", port), request)
        assert _status(answer) == status and answer.count(b"\n") < 10  # one line, no traceback

    assert not _serve(tmp_path, "127.0.0.1", checks)[1]


def test_a_deeply_nested_action_body_is_answered_400(tmp_path: Path) -> None:
    def checks(port: int) -> None:
        answer = _send(("127.0.0.1", port), _action(f"127.0.0.1:{port}", body=b"[" * 4000))
        assert (
            _status(answer) == 400
            and "expected" in json.loads(answer.split(b"\r\n\r\n")[1])["error"]
        )

    assert not _serve(tmp_path, "127.0.0.1", checks)[1]
