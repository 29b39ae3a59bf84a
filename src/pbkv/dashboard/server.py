"""The dashboard's web server: one asyncio loop, one page, live updates by server-sent events.

Theory of operation: a poll task asks the ``Source`` for a snapshot every ``poll_interval_s``
(in a worker thread, since the cluster layer blocks on sockets) and hands it to every open
event stream. Each stream has a queue of one: a slow browser gets the newest snapshot, never a
backlog. A button press is a ``POST /api/action`` with a JSON body; it runs the cluster layer's
fault in a worker thread (the cluster layer records it in the cluster's event log, which the
timeline reads), and wakes the poll task at once so the page shows the effect without waiting
for the next tick.

Routes: ``GET /`` the page; ``GET /static/NAME`` its assets (shipped in the package, no CDN);
``GET /api/snapshot`` the latest snapshot as JSON; ``GET /events`` the event stream;
``POST /api/action`` a fault. Everything is bounded: connections, event streams, request head and
body sizes, and the time a client may take to send its request (``DashboardLimits``). A request
that cannot be parsed (bad request line, a ``Content-Length`` that is not a number) is answered
400, one over a limit 413; neither reaches a route.

Who may drive it. Faults are accepted from this machine only (the peer must be loopback), but a
browser on this machine runs pages of any site: with DNS rebinding a page of
``attacker.example`` re-resolves its own name to 127.0.0.1, and its scripts then reach this
server as *same-origin* requests that merely carry ``Host: attacker.example``. So every request
must name this dashboard in its ``Host`` header (``HostRule``): a loopback name
(``127.0.0.1``, ``localhost``, ``[::1]``), the host it was told to listen on, or the IP address the
connection arrived at (a listen on all interfaces reached as ``10.0.0.5:8080``: an IP literal
cannot be rebound), always with the bound port. A rebinding page can change what a name
resolves to, not the name its browser sends, so it is refused. A state-changing request (any
method but GET) whose ``Origin`` header is present must name such a host too (``http://`` and the
same port): another site's page is refused even where its ``Host`` would pass. Refusals are
answered 403 and logged at most once a second (``request_refused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn

from pbkv.dashboard import actions
from pbkv.dashboard.source import ClusterSource, Source
from pbkv.runtime.config import format_address
from pbkv.runtime.logging import EventLogger

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LOOPBACK_HOSTS: Final = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "::1")
"""Names a Host header may use for this dashboard wherever it listens (with the bound port)."""
WILDCARD_HOSTS: Final = ("", "0.0.0.0", "::")
"""Listen hosts meaning 'every interface': not a name a browser may use (module doc)."""
HTTP_PORT: Final = 80
REFUSAL_LOG_INTERVAL_S: Final = 1.0
LOGGED_HEADER_CHARS_MAX: Final = 100
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/@\s]+)(?::([0-9]{1,5}))?")
_REASONS: Final = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DashboardLimits:
    """Bounds of the dashboard server (defaults in docs/guide.md).

    Attributes:
        poll_interval_s: seconds between two snapshots of the cluster.
        connections_max: HTTP connections at once (more are answered 503 and closed).
        event_streams_max: live event streams at once (browser tabs).
        request_bytes_max: largest request head (request line and headers).
        body_bytes_max: largest request body (an action is a few dozen bytes).
        request_timeout_s: time a client has to send its whole request.
    """

    poll_interval_s: float = 0.5
    connections_max: int = 64
    event_streams_max: int = 16
    request_bytes_max: int = 8_192
    body_bytes_max: int = 4_096
    request_timeout_s: float = 10.0


def asset(name: str) -> bytes:
    return resources.files("pbkv.dashboard").joinpath("static", name).read_bytes()


def _response(status: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _json(status: int, data: Any) -> bytes:
    return _response(status, "application/json", json.dumps(data).encode())


def host_port(text: str) -> tuple[str, int] | None:
    """A Host header's ``name[:port]`` or ``[v6][:port]`` as (lowercase name, port), the port 80
    when absent; None when it is not of that form."""
    found = _HOST.fullmatch(text)
    if found is None:
        return None
    name, port = found.group(1).lower().strip("[]"), int(found.group(2) or HTTP_PORT)
    return (name, port) if port <= 65535 else None


def _same_ip(name: str, local: str) -> bool:
    """Whether ``name`` is an IP literal naming the address ``local`` (IPv4-mapped or not)."""
    try:
        ips = [ipaddress.ip_address(text) for text in (name, local)]
    except ValueError:
        return False
    unmapped = [getattr(ip, "ipv4_mapped", None) or ip for ip in ips]
    return unmapped[0] == unmapped[1]


@dataclass(frozen=True, slots=True)
class HostRule:
    """The names a request may give this dashboard in ``Host`` and ``Origin`` (module doc)."""

    listen_host: str
    port: int

    def allows_host(self, header: str, local: str) -> bool:
        """Whether a ``Host`` header names this dashboard; ``local``: the connection's own IP."""
        parsed = host_port(header)
        if parsed is None or parsed[1] != self.port:
            return False
        name = parsed[0]
        listen = self.listen_host.lower()
        if name in LOOPBACK_NAMES or (name == listen and listen not in WILDCARD_HOSTS):
            return True
        return _same_ip(name, local)

    def allows_origin(self, header: str, local: str) -> bool:
        """Whether an ``Origin`` header is a page of this dashboard (plain http, no path)."""
        return header.startswith("http://") and self.allows_host(header[7:], local)

    def url(self) -> str:
        """Where a refused browser should open the dashboard instead."""
        host = "127.0.0.1" if self.listen_host in WILDCARD_HOSTS else self.listen_host
        return f"http://{format_address(host, self.port)}/"


class _Refused(Exception):
    """A request answered with ``response`` (and closed) before it reaches a route."""

    def __init__(self, response: bytes) -> None:
        super().__init__(response[:40])
        self.response = response


def _content_length(value: str, limit: int) -> int:
    """The body length a ``Content-Length`` header announces; ``_Refused`` (400, or 413 over
    ``limit``) unless it is decimal digits only."""
    if not (value.isascii() and value.isdigit()):
        raise _Refused(_response(400, "text/plain", b"bad Content-Length: expected digits\n"))
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise _Refused(_response(413, "text/plain", b"body too large\n"))
    return int(value)


def _printable(text: str) -> str:
    """A header's value fit for a log line: escaped, and at most ``LOGGED_HEADER_CHARS_MAX``."""
    return repr(text[:LOGGED_HEADER_CHARS_MAX])[1:-1]


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: str
    local: str = ""


class Dashboard:
    """Serves one ``Source`` to browsers; ``directory`` enables the fault buttons."""

    def __init__(
        self,
        source: Source,
        directory: Path | None = None,
        limits: DashboardLimits | None = None,
    ) -> None:
        self.source = source
        self.directory = directory if source.actions else None
        self.limits = limits or DashboardLimits()
        self.latest: dict[str, Any] = {"view": None, "nodes": [], "error": "starting"}
        self.streams: set[asyncio.Queue[bytes]] = set()
        self.connections = 0
        self.poke = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.hosts = HostRule("127.0.0.1", 0)
        self.logger = EventLogger("dashboard", "-", self._view_number)

    async def listen(self, host: str, port: int) -> int:
        """Bind and start serving and polling; returns the bound port."""
        self.server = await asyncio.start_server(
            self._handle, host, port, limit=self.limits.request_bytes_max
        )
        bound = int(self.server.sockets[0].getsockname()[1])
        self.hosts = HostRule(host, bound)
        self.logger.name = format_address(host, bound)
        self._spawn(self._poll_forever())
        return bound

    def _view_number(self) -> int:
        view = self.latest.get("view")
        return int(view.get("number", 0)) if isinstance(view, dict) else 0

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)

    # --- polling ------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            try:
                snapshot = await asyncio.to_thread(self.source.snapshot)
            except Exception as error:  # a bug in a reader must not stop the page
                snapshot = {"view": None, "nodes": [], "error": f"cannot read status: {error}"}
            self.latest = snapshot
            self._broadcast(snapshot)
            self.logger.report_suppressed()
            self.poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.poke.wait(), self.limits.poll_interval_s)

    def _broadcast(self, snapshot: dict[str, Any]) -> None:
        frame = b"data: " + json.dumps(snapshot).encode() + b"\n\n"
        for queue in self.streams:
            if queue.full():
                queue.get_nowait()  # the browser is behind: it gets the newest only
            queue.put_nowait(frame)

    # --- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.limits.connections_max:
            writer.write(_response(503, "text/plain", b"too many connections\n"))
            writer.close()
            return
        self.connections += 1
        try:
            request = await self._read(reader, writer)
            self._check_names(request)
            await self._route(request, writer)
        except _Refused as refused:
            writer.write(refused.response)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_response(413, "text/plain", b"request too large\n"))
        finally:
            self.connections -= 1
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request:
        """The next request; ``_Refused`` if it cannot be parsed or is over a limit."""
        async with asyncio.timeout(self.limits.request_timeout_s):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                raise _Refused(_response(400, "text/plain", b"bad request line\n"))
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = _content_length(headers.get("content-length", "0"), self.limits.body_bytes_max)
            body = await reader.readexactly(length) if length else b""
        path = parts[1].split("?", 1)[0]
        peer, local = (writer.get_extra_info(key) for key in ("peername", "sockname"))
        return _Request(parts[0], path, headers, body, _ip_of(peer), _ip_of(local))

    def _check_names(self, request: _Request) -> None:
        """``_Refused`` unless Host, and Origin if it changes state, name this dashboard (module
        doc: DNS rebinding)."""
        host, origin = request.headers.get("host", ""), request.headers.get("origin")
        if not self.hosts.allows_host(host, request.local):
            self._refuse(request, "host", host)
        if request.method == "GET" or origin is None:
            return  # a read changes nothing; a client that is no browser sends no Origin
        if not self.hosts.allows_origin(origin, request.local):
            self._refuse(request, "origin", origin)

    def _refuse(self, request: _Request, header: str, value: str) -> NoReturn:
        """Log (at most once a second) and raise the 403 refusing ``header``'s ``value``."""
        fields = {"header": header, "value": _printable(value), "peer": request.peer}
        self.logger.limited("request_refused", REFUSAL_LOG_INTERVAL_S, "request_refused", **fields)
        error = f"refused: the {header.title()} header does not name this dashboard"
        raise _Refused(_json(403, {"error": f"{error}; open {self.hosts.url()}"}))

    async def _route(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        method, path = request.method, request.path
        if method == "GET" and path == "/events":
            await self._stream(writer)
            return
        if method == "POST" and path == "/api/action":
            writer.write(await self._action(request))
        elif method != "GET":
            writer.write(_response(405, "text/plain", b"method not allowed\n"))
        elif path in ("/", "/index.html"):
            writer.write(_response(200, ASSETS["index.html"], asset("index.html")))
        elif path.startswith("/static/") and path[8:] in ASSETS:
            writer.write(_response(200, ASSETS[path[8:]], asset(path[8:])))
        elif path == "/api/snapshot":
            writer.write(_json(200, self.latest))
        else:
            writer.write(_response(404, "text/plain", b"not found\n"))
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if len(self.streams) >= self.limits.event_streams_max:
            writer.write(_response(503, "text/plain", b"too many event streams\n"))
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        queue.put_nowait(b"data: " + json.dumps(self.latest).encode() + b"\n\n")
        self.streams.add(queue)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            while True:
                frame = await queue.get()
                writer.write(frame)
                async with asyncio.timeout(self.limits.request_timeout_s):
                    await writer.drain()
        finally:
            self.streams.discard(queue)

    async def _action(self, request: _Request) -> bytes:
        if self.directory is None:
            return _json(409, {"error": "this dashboard watches a view service: no faults"})
        if request.peer not in LOOPBACK_HOSTS:
            return _json(403, {"error": "faults are accepted from this machine only"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _json(415, {"error": "send the action as application/json"})
        try:
            data = json.loads(request.body)
            action, target = str(data["action"]), str(data.get("target", ""))
        except (ValueError, KeyError, TypeError, RecursionError):
            return _json(400, {"error": 'expected {"action": ..., "target": ...}'})
        try:
            result = await asyncio.to_thread(actions.run, self.directory, action, target)
        except actions.ActionError as error:
            return _json(409, {"error": str(error)})
        finally:
            self.poke.set()  # show the effect now (the fault is in the cluster's event log)
        return _json(200, {"result": result})


async def serve(
    source: Source,
    host: str,
    port: int,
    directory: Path | None = None,
    limits: DashboardLimits | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    dashboard = Dashboard(source, directory, limits)
    bound = await dashboard.listen(host, port)
    if on_listening is not None:
        on_listening(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await dashboard.close()


def _ip_of(address: Any) -> str:
    """The IP of a socket address as asyncio gives it (a tuple), else empty."""
    return str(address[0]) if isinstance(address, tuple) else ""


def cluster_source(directory: Path) -> ClusterSource:
    return ClusterSource(directory)
